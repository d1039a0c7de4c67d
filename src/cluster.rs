//! The in-memory view of the cluster that admission decisions read.
//!
//! Decisions never call the API server. The view is filled either from files (`files`) or by
//! watches on a live API server (`live`), and shared behind a read-write lock.

pub mod files;
pub mod live;
pub mod view;

pub use view::{CheckOutcome, CheckSummary, ClusterView, NodeFailure, RuntimeSummary, VmKind, VmSummary};
