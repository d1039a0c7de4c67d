//! Preflight check logic without API calls: the checks a node agent runs on its host, how the
//! controller turns node results into an overall result, and when a new check is due.

pub mod aggregate;
pub mod host_checks;
pub mod trigger;

/// Label that leaves a node out of preflight checks, whatever its value.
pub const SKIP_LABEL: &str = "kubevm.io/VM-SkipSchedule";

/// Prefix of the message of a passed result that is a warning.
pub const WARNING_PREFIX: &str = "warning:";

/// Prefix of the names of automatically created checks, followed by a UUID v4.
pub const CHECK_NAME_PREFIX: &str = "vmruntime-preflight-check-";

/// Returns true when a node takes part in preflight checks.
pub fn is_eligible(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    !labels.is_some_and(|labels| labels.contains_key(SKIP_LABEL))
}
