//! The outcome of one admission decision, before it is put into an AdmissionResponse.

use json_patch::Patch;

/// Allow or deny, with the HTTP status the API server reports to its client on denial.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// HTTP status code of a denial: 403 for policy, 422 for invalid values, 503 while the
    /// cluster state is not loaded.
    pub code: u16,
    /// Kubernetes status reason of a denial, such as `Forbidden`.
    pub reason: &'static str,
    pub message: String,
    /// Operations for `/mutate`; empty means no patch.
    pub patch: Patch,
    pub warnings: Vec<String>,
}

impl Decision {
    pub fn allow() -> Decision {
        Decision {
            allowed: true,
            code: 0,
            reason: "",
            message: String::new(),
            patch: Patch(Vec::new()),
            warnings: Vec::new(),
        }
    }

    /// Denies by policy (HTTP 403).
    pub fn forbidden(message: impl Into<String>) -> Decision {
        Decision::deny(403, "Forbidden", message)
    }

    /// Denies an invalid value (HTTP 422).
    pub fn invalid(message: impl Into<String>) -> Decision {
        Decision::deny(422, "Invalid", message)
    }

    /// Denies because the cluster state is not loaded yet (HTTP 503). The client may retry.
    pub fn not_loaded() -> Decision {
        Decision::deny(
            503,
            "ServiceUnavailable",
            "cluster state not loaded yet: the webhook is still syncing its watches; retry in a few seconds",
        )
    }

    fn deny(code: u16, reason: &'static str, message: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            code,
            reason,
            message: message.into(),
            patch: Patch(Vec::new()),
            warnings: Vec::new(),
        }
    }

    pub fn with_warning(mut self, warning: impl Into<String>) -> Decision {
        self.warnings.push(warning.into());
        self
    }

    /// Returns the result for logs and metrics: allowed, patched or denied.
    pub fn result_label(&self) -> &'static str {
        match (self.allowed, self.patch.0.is_empty()) {
            (false, _) => "denied",
            (true, true) => "allowed",
            (true, false) => "patched",
        }
    }
}
