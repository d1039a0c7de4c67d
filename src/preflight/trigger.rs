//! Decides when the controller starts a new preflight check.
//!
//! The controller records a [`Fingerprint`] of what the last check covered in an annotation of the
//! VMRuntime. A new check is due when the runtime becomes enabled, `useEmulation` changes, an
//! eligible node appears (a new node, or one whose skip label was removed), or a node's kubelet
//! version changes. Nodes that leave need no check.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Annotation on the VMRuntime with the JSON [`Fingerprint`] of the last trigger evaluation.
pub const FINGERPRINT_ANNOTATION: &str = "vm.cluster.gke.io/preflight-fingerprint";

/// What a preflight check depends on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprint {
    pub enabled: bool,
    pub use_emulation: bool,
    /// Kubelet version per eligible node.
    pub nodes: BTreeMap<String, String>,
}

/// Reason a new check is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Enabled,
    EmulationChanged,
    NodeEligible(String),
    KubeletChanged(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Enabled => f.write_str("the VM runtime was enabled"),
            Reason::EmulationChanged => f.write_str("spec.useEmulation changed"),
            Reason::NodeEligible(node) => write!(f, "node {node} became eligible"),
            Reason::KubeletChanged(node) => write!(f, "the kubelet version of node {node} changed"),
        }
    }
}

/// Returns why a new check is due, comparing the current state with the recorded one.
pub fn reason(recorded: Option<&Fingerprint>, current: &Fingerprint) -> Option<Reason> {
    if !current.enabled {
        return None;
    }
    let Some(recorded) = recorded.filter(|recorded| recorded.enabled) else {
        return Some(Reason::Enabled);
    };
    if recorded.use_emulation != current.use_emulation {
        return Some(Reason::EmulationChanged);
    }
    for (node, version) in &current.nodes {
        match recorded.nodes.get(node) {
            None => return Some(Reason::NodeEligible(node.clone())),
            Some(recorded_version) if recorded_version != version => return Some(Reason::KubeletChanged(node.clone())),
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(enabled: bool, use_emulation: bool, nodes: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            enabled,
            use_emulation,
            nodes: nodes.iter().map(|(node, version)| ((*node).to_owned(), (*version).to_owned())).collect(),
        }
    }

    #[test]
    fn reason_cases() {
        let base = fingerprint(true, false, &[("a", "v1.30.0"), ("b", "v1.30.0")]);
        let cases = [
            ("first enable", None, base.clone(), Some(Reason::Enabled)),
            ("disabled", None, fingerprint(false, false, &[]), None),
            ("was disabled", Some(fingerprint(false, false, &[("a", "v1.30.0")])), base.clone(), Some(Reason::Enabled)),
            ("unchanged", Some(base.clone()), base.clone(), None),
            (
                "emulation",
                Some(base.clone()),
                fingerprint(true, true, &[("a", "v1.30.0"), ("b", "v1.30.0")]),
                Some(Reason::EmulationChanged),
            ),
            (
                "node added",
                Some(base.clone()),
                fingerprint(true, false, &[("a", "v1.30.0"), ("b", "v1.30.0"), ("c", "v1.30.0")]),
                Some(Reason::NodeEligible("c".to_owned())),
            ),
            ("node removed", Some(base.clone()), fingerprint(true, false, &[("a", "v1.30.0")]), None),
            (
                "kubelet upgraded",
                Some(base.clone()),
                fingerprint(true, false, &[("a", "v1.30.0"), ("b", "v1.31.0")]),
                Some(Reason::KubeletChanged("b".to_owned())),
            ),
        ];
        for (case, recorded, current, expected) in cases {
            assert_eq!(reason(recorded.as_ref(), &current), expected, "{case}");
        }
    }
}
