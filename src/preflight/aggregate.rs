//! Turns the node results of a running preflight check into its overall result.
//!
//! A check completes when every eligible node has reported, or when the node timeout has passed
//! since `startTime`. A node that has not reported by then gets a failed `AGENT` result.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::resources::preflight_check::{CheckResult, NodeResult, PreflightCheckStatus};
use crate::resources::vmruntime::FeatureStatus;

/// Check name of the result recorded for a node whose agent did not report.
pub const AGENT: &str = "AGENT";

/// Number of failed nodes copied into `status.failures`.
pub const MAX_FAILURES: usize = 10;

/// Progress of a running check.
#[derive(Clone, Debug, PartialEq)]
pub enum Evaluation {
    /// Nodes are still reporting; look again after `remaining` at the latest.
    Waiting {
        reported: usize,
        eligible: usize,
        remaining: Duration,
    },
    Complete(Completion),
}

/// The overall result of a check, ready to be written into its status.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub pass: bool,
    /// Results of every eligible node, including `AGENT` failures for nodes that did not report.
    pub checks: BTreeMap<String, NodeResult>,
    /// The first failed nodes by name, at most [`MAX_FAILURES`].
    pub failures: BTreeMap<String, NodeResult>,
    /// Per check name: passed unless a node failed it, and how many nodes did.
    pub feature_statuses: BTreeMap<String, FeatureStatus>,
}

/// Evaluates a started check at time `now`.
pub fn evaluate(status: &PreflightCheckStatus, now: Timestamp, node_timeout: Duration) -> Evaluation {
    let eligible = &status.eligible_nodes;
    let reported = eligible.iter().filter(|node| status.checks.contains_key(*node)).count();
    let started = status.start_time.as_ref().map_or(now, |time| time.0);
    let elapsed = now.duration_since(started).unsigned_abs();

    if reported < eligible.len() && elapsed < node_timeout {
        return Evaluation::Waiting { reported, eligible: eligible.len(), remaining: node_timeout - elapsed };
    }
    Evaluation::Complete(complete(status, node_timeout))
}

fn complete(status: &PreflightCheckStatus, node_timeout: Duration) -> Completion {
    let mut checks = BTreeMap::new();
    for node in &status.eligible_nodes {
        let result = status.checks.get(node).cloned().unwrap_or_else(|| did_not_report(node_timeout));
        checks.insert(node.clone(), result);
    }

    let mut feature_statuses: BTreeMap<String, FeatureStatus> = BTreeMap::new();
    for result in checks.values().flat_map(|node| &node.results) {
        let feature = feature_statuses
            .entry(result.check_name.clone())
            .or_insert(FeatureStatus { passed: true, failed_node_num: 0 });
        if !result.passed {
            feature.passed = false;
            feature.failed_node_num += 1;
        }
    }

    let failures: BTreeMap<String, NodeResult> = checks
        .iter()
        .filter(|(_, result)| !result.passed)
        .take(MAX_FAILURES)
        .map(|(node, result)| (node.clone(), result.clone()))
        .collect();
    // A check with no eligible node cannot show that any node runs VMs, so it fails.
    let pass = !checks.is_empty() && checks.values().all(|node| node.passed);
    Completion { pass, checks, failures, feature_statuses }
}

fn did_not_report(node_timeout: Duration) -> NodeResult {
    let message = format!(
        "the node agent did not report within {} s; check that the vmruntime-gate agent DaemonSet runs on this node \
         (kubectl get pods -n vm-system -o wide)",
        node_timeout.as_secs()
    );
    NodeResult { passed: false, results: vec![CheckResult { check_name: AGENT.to_owned(), passed: false, message }] }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(120);

    fn node(results: &[(&str, bool)]) -> NodeResult {
        NodeResult {
            passed: results.iter().all(|(_, passed)| *passed),
            results: results
                .iter()
                .map(|(name, passed)| CheckResult {
                    check_name: (*name).to_owned(),
                    passed: *passed,
                    message: String::new(),
                })
                .collect(),
        }
    }

    fn status(eligible: &[&str], reported: &[(&str, NodeResult)]) -> PreflightCheckStatus {
        PreflightCheckStatus {
            start_time: Some(Time("2026-12-01T00:00:00Z".parse().unwrap())),
            eligible_nodes: eligible.iter().map(|node| (*node).to_owned()).collect(),
            checks: reported.iter().map(|(name, result)| ((*name).to_owned(), result.clone())).collect(),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        "2026-12-01T00:00:00Z".parse::<Timestamp>().unwrap() + std::time::Duration::from_secs(seconds as u64)
    }

    #[test]
    fn waits_for_missing_node() {
        let status = status(&["a", "b"], &[("a", node(&[("KVM", true)]))]);
        assert_eq!(
            evaluate(&status, at(30), TIMEOUT),
            Evaluation::Waiting { reported: 1, eligible: 2, remaining: Duration::from_secs(90) }
        );
    }

    #[test]
    fn completes_when_all_reported() {
        let status = status(
            &["a", "b"],
            &[("a", node(&[("CPU", true), ("KVM", true)])), ("b", node(&[("CPU", true), ("KVM", false)]))],
        );
        let Evaluation::Complete(completion) = evaluate(&status, at(5), TIMEOUT) else { panic!("not complete") };
        assert!(!completion.pass);
        assert_eq!(completion.failures.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(completion.feature_statuses["CPU"], FeatureStatus { passed: true, failed_node_num: 0 });
        assert_eq!(completion.feature_statuses["KVM"], FeatureStatus { passed: false, failed_node_num: 1 });
    }

    #[test]
    fn timeout_records_agent_failure() {
        let status = status(&["a", "b"], &[("a", node(&[("KVM", true)]))]);
        let Evaluation::Complete(completion) = evaluate(&status, at(121), TIMEOUT) else { panic!("not complete") };
        assert!(!completion.pass);
        let missing = &completion.checks["b"];
        assert_eq!(missing.results[0].check_name, AGENT);
        assert!(missing.results[0].message.contains("did not report within 120 s"), "{missing:?}");
        assert_eq!(completion.feature_statuses[AGENT].failed_node_num, 1);
    }

    #[test]
    fn ignores_results_of_ineligible_nodes() {
        let status = status(&["a"], &[("a", node(&[("KVM", true)])), ("skipped", node(&[("KVM", false)]))]);
        let Evaluation::Complete(completion) = evaluate(&status, at(1), TIMEOUT) else { panic!("not complete") };
        assert!(completion.pass);
        assert!(!completion.checks.contains_key("skipped"));
    }

    #[test]
    fn failures_capped_at_ten() {
        let names: Vec<String> = (0..12).map(|index| format!("node-{index:02}")).collect();
        let eligible: Vec<&str> = names.iter().map(String::as_str).collect();
        let reported: Vec<(&str, NodeResult)> = eligible.iter().map(|name| (*name, node(&[("KVM", false)]))).collect();
        let Evaluation::Complete(completion) = evaluate(&status(&eligible, &reported), at(1), TIMEOUT) else {
            panic!("not complete")
        };
        assert_eq!(completion.failures.len(), MAX_FAILURES);
        assert_eq!(completion.checks.len(), 12);
        assert_eq!(completion.feature_statuses["KVM"].failed_node_num, 12);
    }

    #[test]
    fn no_eligible_node_fails() {
        let Evaluation::Complete(completion) = evaluate(&status(&[], &[]), at(0), TIMEOUT) else {
            panic!("not complete")
        };
        assert!(!completion.pass);
    }
}
