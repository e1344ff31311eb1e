//! `errmap check NEW --against OLD`: whether a new version of the catalogs
//! keeps the clients of the old one working (errmap_spec::compat).

use std::path::Path;

use errmap::{catalog_set, spec::compat};
use serde_json::json;

use super::exit::{Failure, Outcome};

/// Every catalog of the descriptor set at `path`, errmap's own included.
fn specs(path: &Path) -> Result<Vec<errmap::spec::CatalogSpec>, Failure> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Failure::BadInput(format!("{name}: {e}")))?;
    catalog_set::read_specs(&bytes, &name, true).map_err(|e| Failure::BadInput(e.to_string()))
}

/// Prints one line per finding (or a JSON array); fails with exit 1 when a
/// finding breaks clients.
pub(crate) fn check(new: &Path, old: &Path, json: bool) -> Outcome {
    let (new_specs, old_specs) = (specs(new)?, specs(old)?);
    let findings = compat::compare(&old_specs, &new_specs);
    if json {
        let list: Vec<_> = findings
            .iter()
            .map(|f| {
                json!({
                    "value": f.value,
                    "number": f.number,
                    "kind": f.kind.name(),
                    "breaking": f.breaking,
                    "detail": f.detail,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for finding in &findings {
            println!("{finding}");
        }
    }
    let breaking = findings.iter().filter(|f| f.breaking).count();
    if breaking > 0 {
        return Err(Failure::Breaking(format!(
            "{breaking} of {} changes break clients of {}",
            findings.len(),
            old.display()
        )));
    }
    if !json {
        eprintln!(
            "compatible: {} changes, none breaks clients of {}",
            findings.len(),
            old.display()
        );
    }
    Ok(())
}
