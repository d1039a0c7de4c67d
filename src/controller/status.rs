//! Computes the VMRuntime status from the runtime and its latest preflight check.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::preflight::aggregate;
use crate::resources::vmruntime::{PreflightCheckSummary, VMRuntimeStatus};
use crate::resources::{VMRuntime, VMRuntimePreflightCheck};

pub const READY: &str = "Ready";
pub const PREFLIGHT_CHECK_PASSED: &str = "PreflightCheckPassed";
pub const DISABLING: &str = "Disabling";

/// Builds the status that `runtime` should have, given its latest check and whether a forced
/// disable is in progress. Conditions keep their transition time while their status stays.
pub fn desired(
    runtime: &VMRuntime,
    latest: Option<&VMRuntimePreflightCheck>,
    disabling: bool,
    now: &Time,
) -> VMRuntimeStatus {
    let current = runtime.status.clone().unwrap_or_default();
    let enabled = runtime.spec.enabled == Some(true);
    let passed = latest.and_then(|check| check.status.as_ref()).and_then(|status| status.pass);
    let ready = enabled && passed == Some(true) && !disabling;

    let summary = latest.map(|check| {
        let status = check.status.clone().unwrap_or_default();
        // Feature statuses are derived from the recorded node results, so they match the check.
        let feature_statuses = match aggregate::evaluate(&status, now.0, std::time::Duration::MAX) {
            aggregate::Evaluation::Complete(completion) if status.pass.is_some() => completion.feature_statuses,
            _ => Default::default(),
        };
        PreflightCheckSummary {
            preflight_check_name: Some(check.name_any()),
            preflight_check_passed: passed,
            feature_statuses,
        }
    });

    let generation = runtime.metadata.generation;
    let mut conditions = current.conditions.clone();
    let (ready_reason, ready_message) = match (enabled, passed, disabling) {
        (_, _, true) => ("Disabling", "the VM runtime is being disabled and its VMs deleted".to_owned()),
        (false, _, false) => ("Disabled", "spec.enabled is false".to_owned()),
        (true, Some(true), false) => ("PreflightCheckPassed", "the latest preflight check passed".to_owned()),
        (true, Some(false), false) => ("PreflightCheckFailed", "the latest preflight check failed".to_owned()),
        (true, None, false) => match latest {
            Some(check) => ("PreflightCheckRunning", format!("preflight check {} is running", check.name_any())),
            None => ("NoPreflightCheck", "no preflight check has run yet".to_owned()),
        },
    };
    set_condition(&mut conditions, READY, ready, ready_reason, &ready_message, now, generation);
    let (check_status, check_reason) = match passed {
        Some(true) => ("True", "Passed"),
        Some(false) => ("False", "Failed"),
        None => ("Unknown", if latest.is_some() { "Running" } else { "NotRun" }),
    };
    let check_message = latest.map_or("no preflight check has run yet".to_owned(), |check| {
        format!("latest preflight check: {}", check.name_any())
    });
    set_condition_status(
        &mut conditions,
        PREFLIGHT_CHECK_PASSED,
        check_status,
        check_reason,
        &check_message,
        now,
        generation,
    );
    let (disabling_reason, disabling_message) = if disabling {
        ("ForcedDisable", "deleting every VM and its disks before the runtime is disabled")
    } else {
        ("NotDisabling", "no forced disable in progress")
    };
    set_condition(&mut conditions, DISABLING, disabling, disabling_reason, disabling_message, now, generation);

    VMRuntimeStatus {
        ready: Some(ready),
        preflight_check_summary: summary,
        conditions,
        observed_generation: generation,
    }
}

fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: &Time,
    generation: Option<i64>,
) {
    let status = if value { "True" } else { "False" };
    set_condition_status(conditions, type_, status, reason, message, now, generation);
}

fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
    generation: Option<i64>,
) {
    let previous = conditions.iter().position(|condition| condition.type_ == type_);
    let last_transition_time = match previous {
        Some(index) if conditions[index].status == status => conditions[index].last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation: generation,
    };
    match previous {
        Some(index) => conditions[index] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::VMRuntimeSpec;
    use crate::resources::preflight_check::{
        CheckResult, NodeResult, PreflightCheckStatus, VMRuntimePreflightCheckSpec,
    };
    use crate::resources::vmruntime::FeatureStatus;

    fn now() -> Time {
        Time("2026-12-01T00:00:00Z".parse().unwrap())
    }

    fn runtime(enabled: bool) -> VMRuntime {
        VMRuntime::new("vmruntime", VMRuntimeSpec { enabled: Some(enabled), ..Default::default() })
    }

    fn check(pass: Option<bool>) -> VMRuntimePreflightCheck {
        let mut check = VMRuntimePreflightCheck::new("check-1", VMRuntimePreflightCheckSpec {});
        let failed = CheckResult { check_name: "KVM".to_owned(), passed: false, message: "missing".to_owned() };
        let ok = CheckResult { check_name: "KVM".to_owned(), passed: true, message: "ok".to_owned() };
        check.status = Some(PreflightCheckStatus {
            pass,
            eligible_nodes: vec!["a".to_owned(), "b".to_owned()],
            checks: [
                ("a".to_owned(), NodeResult { passed: true, results: vec![ok] }),
                ("b".to_owned(), NodeResult { passed: pass != Some(false), results: vec![failed] }),
            ]
            .into(),
            ..Default::default()
        });
        check
    }

    fn condition<'a>(status: &'a VMRuntimeStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|condition| condition.type_ == type_).unwrap()
    }

    #[test]
    fn ready_cases() {
        // (case, enabled, latest pass, disabling, ready, Ready reason)
        let cases = [
            ("passed", true, Some(Some(true)), false, true, "PreflightCheckPassed"),
            ("failed", true, Some(Some(false)), false, false, "PreflightCheckFailed"),
            ("running", true, Some(None), false, false, "PreflightCheckRunning"),
            ("no check", true, None, false, false, "NoPreflightCheck"),
            ("disabled", false, Some(Some(true)), false, false, "Disabled"),
            ("disabling", false, Some(Some(true)), true, false, "Disabling"),
        ];
        for (case, enabled, latest, disabling, ready, reason) in cases {
            let latest = latest.map(check);
            let status = desired(&runtime(enabled), latest.as_ref(), disabling, &now());
            assert_eq!(status.ready, Some(ready), "{case}");
            assert_eq!(condition(&status, READY).reason, reason, "{case}");
            assert_eq!(condition(&status, DISABLING).status, if disabling { "True" } else { "False" }, "{case}");
        }
    }

    #[test]
    fn summary_counts_failed_nodes() {
        let latest = check(Some(false));
        let status = desired(&runtime(true), Some(&latest), false, &now());
        let summary = status.preflight_check_summary.unwrap();
        assert_eq!(summary.preflight_check_name.as_deref(), Some("check-1"));
        assert_eq!(summary.preflight_check_passed, Some(false));
        assert_eq!(summary.feature_statuses["KVM"], FeatureStatus { passed: false, failed_node_num: 1 });
    }

    #[test]
    fn transition_time_kept_while_status_same() {
        let latest = check(Some(true));
        let mut runtime = runtime(true);
        runtime.status = Some(desired(&runtime, Some(&latest), false, &now()));
        let later = Time("2026-12-02T00:00:00Z".parse().unwrap());
        let status = desired(&runtime, Some(&latest), false, &later);
        assert_eq!(condition(&status, READY).last_transition_time, now());
        let failed = check(Some(false));
        let status = desired(&runtime, Some(&failed), false, &later);
        assert_eq!(condition(&status, READY).last_transition_time, later);
    }
}
