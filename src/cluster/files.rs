//! Loads a cluster view from YAML and JSON files, for local runs, tests and offline review.
//!
//! A path names one file or a folder that is read recursively (`*.yaml`, `*.yml`, `*.json`).
//! Files may hold several documents and `kind: List` objects. Every document must be one of the
//! kinds the gate reads, so that a misspelt kind cannot silently hide a VM from the disable guard.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kube::core::DynamicObject;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use super::view::{ClusterView, VmKind, VmSummary};
use crate::resources::{GROUP, VMRuntime, VMRuntimePreflightCheck};

/// Kinds accepted in cluster state files, as `apiVersion kind`.
const SUPPORTED_KINDS: &str = "vm.cluster.gke.io/v1 VMRuntime, VMRuntimePreflightCheck, VirtualMachine, \
     VirtualMachineDisk; kubevirt.io/v1 or kubevirt.io/v1alpha3 VirtualMachine, VirtualMachineInstance; \
     v1 Node; v1 List";

/// Returns true for the API versions that the cluster state files accept per group.
fn is_supported_version(api_version: &str) -> bool {
    matches!(api_version, "v1" | "vm.cluster.gke.io/v1" | "kubevirt.io/v1" | "kubevirt.io/v1alpha3")
}

/// Failure to load cluster state files. Every variant names the file and, where it helps, the document.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot read cluster state {path}: {error}; check the --cluster-state path")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cluster state folder {path} has no .yaml, .yml or .json files; add files or pass another --cluster-state")]
    Empty { path: PathBuf },
    #[error("{path}: invalid {format}: {message}")]
    Syntax { path: PathBuf, format: &'static str, message: String },
    #[error("{path}, document {document}: {message}")]
    Document { path: PathBuf, document: usize, message: String },
    #[error("{path}, document {document}: {kind} {name} is defined twice, also in {first}; keep one of them")]
    Duplicate { path: PathBuf, document: usize, kind: String, name: String, first: PathBuf },
}

/// Reads every cluster state file under `path` into a loaded view.
pub fn load(path: &Path) -> Result<ClusterView, LoadError> {
    let files = collect_files(path)?;
    let mut loader = Loader::default();
    for file in &files {
        let text =
            std::fs::read_to_string(file).map_err(|source| LoadError::Read { path: file.clone(), error: source })?;
        for (index, document) in parse_documents(file, &text)?.into_iter().enumerate() {
            loader.add(file, index + 1, document)?;
        }
    }
    let mut view = loader.view;
    view.set_loaded(true);
    Ok(view)
}

fn collect_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let metadata =
        std::fs::metadata(path).map_err(|source| LoadError::Read { path: path.to_owned(), error: source })?;
    if metadata.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(folder) = folders.pop() {
        let entries =
            std::fs::read_dir(&folder).map_err(|source| LoadError::Read { path: folder.clone(), error: source })?;
        for entry in entries {
            let entry = entry.map_err(|source| LoadError::Read { path: folder.clone(), error: source })?;
            let entry_path = entry.path();
            if entry_path.is_dir() {
                folders.push(entry_path);
            } else if is_state_file(&entry_path) {
                files.push(entry_path);
            }
        }
    }
    if files.is_empty() {
        return Err(LoadError::Empty { path: path.to_owned() });
    }
    files.sort();
    Ok(files)
}

fn is_state_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|ext| ext.to_str()), Some("yaml" | "yml" | "json"))
}

/// Splits a file into its non-empty documents.
fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, LoadError> {
    let is_json = path.extension().is_some_and(|ext| ext == "json");
    let documents: Vec<Value> =
        if is_json {
            serde_json::Deserializer::from_str(text).into_iter::<Value>().collect::<Result<_, _>>().map_err(
                |error| LoadError::Syntax { path: path.to_owned(), format: "JSON", message: error.to_string() },
            )?
        } else {
            serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options()).map_err(|error| {
                LoadError::Syntax { path: path.to_owned(), format: "YAML", message: error.to_string() }
            })?
        };
    Ok(documents.into_iter().filter(|document| !document.is_null()).collect())
}

/// YAML limits sized for cluster dumps: the parser's defaults stop at 1,024 documents and 250,000
/// nodes, while a state of 10,000 VMs has 10,000 documents. Alias and nesting limits stay as they are.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = 1_000_000;
    budget.max_nodes = 50_000_000;
    budget.max_events = 100_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

#[derive(Default)]
struct Loader {
    view: ClusterView,
    /// First file of each (apiVersion group, kind, namespace, name), to report duplicates.
    seen: HashMap<(String, String, String, String), PathBuf>,
    nodes: usize,
}

impl Loader {
    fn add(&mut self, path: &Path, document: usize, value: Value) -> Result<(), LoadError> {
        let invalid = |message: String| LoadError::Document { path: path.to_owned(), document, message };

        let Value::Object(fields) = &value else {
            return Err(invalid("expected a Kubernetes object (a mapping with apiVersion and kind)".to_owned()));
        };
        let api_version = fields.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = fields.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        if api_version.is_empty() || kind.is_empty() {
            return Err(invalid("apiVersion and kind are required".to_owned()));
        }
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group).to_owned();

        if !is_supported_version(&api_version) {
            return Err(invalid(format!(
                "apiVersion {api_version} of kind {kind} is not supported; supported: {SUPPORTED_KINDS}"
            )));
        }

        if group.is_empty() && kind == "List" {
            let items = fields.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            for item in items {
                self.add(path, document, item)?;
            }
            return Ok(());
        }

        let object: DynamicObject = decode(value.clone()).map_err(|error| invalid(format!("{kind}: {error}")))?;
        let name = object.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(invalid(format!("{kind} has no metadata.name; every object needs one")));
        }
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let key = (group.clone(), kind.clone(), namespace.clone(), name.clone());
        if let Some(first) = self.seen.get(&key) {
            let qualified = if namespace.is_empty() { name } else { format!("{namespace}/{name}") };
            return Err(LoadError::Duplicate {
                path: path.to_owned(),
                document,
                kind,
                name: qualified,
                first: first.clone(),
            });
        }
        self.seen.insert(key, path.to_owned());

        if let Some(vm_kind) = VmKind::from_group_kind(&group, &kind) {
            if namespace.is_empty() {
                return Err(invalid(format!("{vm_kind} {name} has no metadata.namespace; VMs are namespaced")));
            }
            self.view.apply_vm(VmSummary::from_object(vm_kind, &object));
            return Ok(());
        }
        match (group.as_str(), kind.as_str()) {
            (GROUP, "VMRuntime") => {
                let runtime =
                    decode_custom::<VMRuntime>(value).map_err(|error| invalid(format!("{kind} {name}: {error}")))?;
                self.view.apply_runtime(&runtime);
            }
            (GROUP, "VMRuntimePreflightCheck") => {
                let check = decode_custom::<VMRuntimePreflightCheck>(value)
                    .map_err(|error| invalid(format!("{kind} {name}: {error}")))?;
                self.view.apply_check(&check);
            }
            (GROUP, "VirtualMachineDisk") => {}
            ("", "Node") => {
                self.nodes += 1;
                self.view.set_node_count(self.nodes);
            }
            _ => {
                return Err(invalid(format!(
                    "kind {kind} of apiVersion {api_version} is not part of the cluster state; supported: {SUPPORTED_KINDS}"
                )));
            }
        }
        Ok(())
    }
}

/// Decodes an object, naming the path of the field that does not fit, such as `spec.enabled`.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            format!("invalid object: {}", error.inner())
        } else {
            format!("invalid field {path}: {}", error.inner())
        }
    })
}

/// Decodes a custom resource of the gate, with a missing or null `spec` read as `{}`, as the
/// API server defaults it.
fn decode_custom<T: DeserializeOwned>(mut value: Value) -> Result<T, String> {
    if let Some(fields) = value.as_object_mut()
        && fields.get("spec").is_none_or(Value::is_null)
    {
        fields.insert("spec".to_owned(), Value::Object(Default::default()));
    }
    decode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::CheckOutcome;

    fn load_text(name: &str, text: &str) -> Result<ClusterView, LoadError> {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join(name), text).unwrap();
        load(folder.path())
    }

    #[test]
    fn multi_document_yaml_loads() {
        let view = load_text(
            "state.yaml",
            "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: true}\n---\n\
             ---\napiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachine\nmetadata: {name: web, namespace: default}\n\
             status: {state: Running}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: worker-0}\n",
        )
        .unwrap();
        assert!(view.is_loaded());
        assert!(view.runtime().unwrap().enabled);
        assert_eq!(view.live_vms().count(), 1);
        assert!(view.live_vms().next().unwrap().is_running());
        assert_eq!(view.node_count(), 1);
    }

    #[test]
    fn many_documents_load() {
        let documents: Vec<String> =
            (0..3000).map(|index| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: node-{index}}}\n")).collect();
        let view = load_text("nodes.yaml", &documents.join("---\n")).unwrap();
        assert_eq!(view.node_count(), 3000);
    }

    #[test]
    fn json_list_loads() {
        let view = load_text(
            "state.json",
            r#"{"apiVersion":"v1","kind":"List","items":[
                {"apiVersion":"vm.cluster.gke.io/v1","kind":"VMRuntimePreflightCheck",
                 "metadata":{"name":"c1","namespace":"vm-system"},"status":{"pass":true}},
                {"apiVersion":"kubevirt.io/v1","kind":"VirtualMachineInstance",
                 "metadata":{"name":"i","namespace":"ns"}}]}"#,
        )
        .unwrap();
        assert_eq!(view.latest_check().unwrap().outcome, CheckOutcome::Passed);
        assert_eq!(view.live_vms().next().unwrap().kind, VmKind::KubevirtVirtualMachineInstance);
    }

    #[test]
    fn unknown_kind_rejected_with_name() {
        let error =
            load_text("a.yaml", "apiVersion: vm.cluster.gke.io/v1\nkind: VirtualMachines\nmetadata: {name: x}\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("VirtualMachines"), "{error}");
        assert!(error.contains("document 1"), "{error}");
    }

    #[test]
    fn duplicate_object_rejected() {
        let doc = "apiVersion: v1\nkind: Node\nmetadata: {name: worker-0}\n";
        let error = load_text("a.yaml", &format!("{doc}---\n{doc}")).unwrap_err().to_string();
        assert!(error.contains("defined twice"), "{error}");
    }

    #[test]
    fn vm_without_namespace_rejected() {
        let error = load_text("a.yaml", "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("metadata.namespace"), "{error}");
    }

    #[test]
    fn syntax_error_names_file() {
        let error = load_text("bad.yaml", "kind: [unclosed\n").unwrap_err().to_string();
        assert!(error.contains("bad.yaml"), "{error}");
        assert!(error.contains("invalid YAML"), "{error}");
    }

    #[test]
    fn empty_folder_rejected() {
        let folder = tempfile::tempdir().unwrap();
        let error = load(folder.path()).unwrap_err().to_string();
        assert!(error.contains("has no .yaml"), "{error}");
    }

    #[test]
    fn missing_path_rejected() {
        let error = load(Path::new("/nonexistent/state")).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/state"), "{error}");
    }

    #[test]
    fn wrong_field_type_rejected() {
        let error = load_text(
            "a.yaml",
            "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntime\nmetadata: {name: vmruntime}\nspec: {enabled: 3}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("VMRuntime vmruntime: invalid field spec.enabled"), "{error}");
    }

    #[test]
    fn bad_timestamp_names_field() {
        let error = load_text(
            "a.yaml",
            "apiVersion: vm.cluster.gke.io/v1\nkind: VMRuntimePreflightCheck\n\
             metadata: {name: c, namespace: vm-system, creationTimestamp: yesterday}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("metadata.creationTimestamp"), "{error}");
    }

    #[test]
    fn unsupported_version_rejected() {
        let error = load_text(
            "a.yaml",
            "apiVersion: vm.cluster.gke.io/v2\nkind: VirtualMachine\nmetadata: {name: x, namespace: d}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("apiVersion vm.cluster.gke.io/v2"), "{error}");
    }
}
