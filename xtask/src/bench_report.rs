//! `docs/benchmarks.md`: people write its prose, `cargo xtask bench` its figures, so no figure
//! is ever edited by hand. Each table sits between `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->`; a run replaces the tables its benchmarks wrote
//! (`target/bench-NAME.md`, newer than the run's start) with those figures, the machine and
//! the date, and leaves the others as they were (a filtered run measures only some).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

/// The tables, by the name their benchmark writes under `target/bench-NAME.md`.
pub const TABLES: [&str; 6] = ["vault", "server", "login", "sync", "records-in", "app"];

/// Where the document lives, from the workspace root.
const DOCUMENT: &str = "docs/benchmarks.md";

/// Puts every table written since `started` into the document; returns the names updated.
pub fn update(root: &Path, started: SystemTime) -> Result<Vec<&'static str>, String> {
    let path = root.join(DOCUMENT);
    let mut document = std::fs::read_to_string(&path).map_err(|e| format!("{DOCUMENT}: {e}"))?;
    let stamp = format!("_Measured on {} ({}) by `cargo xtask bench`._", machine(), today());
    let mut updated = Vec::new();
    for name in TABLES {
        let table = root.join(format!("target/bench-{name}.md"));
        let fresh = std::fs::metadata(&table)
            .and_then(|m| m.modified())
            .is_ok_and(|written| written >= started);
        if !fresh {
            continue;
        }
        let figures = std::fs::read_to_string(&table).map_err(|e| format!("{}: {e}", table.display()))?;
        document = splice(&document, name, &format!("{stamp}\n\n{}", figures.trim_end()))?;
        updated.push(name);
    }
    std::fs::write(&path, document).map_err(|e| format!("{DOCUMENT}: {e}"))?;
    Ok(updated)
}

/// `document` with the block named `name` holding `body` instead of what it held.
fn splice(document: &str, name: &str, body: &str) -> Result<String, String> {
    let (open, close) = (format!("<!-- bench:{name} -->"), format!("<!-- /bench:{name} -->"));
    let missing = || format!("{DOCUMENT} has no `{open}` … `{close}` block: put one where the {name} table belongs");
    let start = document.find(&open).ok_or_else(missing)? + open.len();
    let end = start + document[start..].find(&close).ok_or_else(missing)?;
    Ok(format!("{}\n{body}\n{}", &document[..start], &document[end..]))
}

/// The processor and how many cores measured: figures travel between machines only as ratios.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "an unknown processor".to_owned());
    format!("{cores} cores, {model}")
}

/// Today's date (UTC), as `date` gives it.
fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "date unknown".to_owned(), |d| d.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_and_nothing_else() {
        let document = "intro\n<!-- bench:sync -->\nold\n<!-- /bench:sync -->\nprose\n<!-- bench:app -->\nkept\n<!-- /bench:app -->\n";
        let out = splice(document, "sync", "new").unwrap();
        assert_eq!(
            out,
            "intro\n<!-- bench:sync -->\nnew\n<!-- /bench:sync -->\nprose\n<!-- bench:app -->\nkept\n<!-- /bench:app -->\n"
        );
        assert_eq!(splice(&out, "sync", "new").unwrap(), out, "running twice changes nothing");
        assert!(splice(document, "vault", "x").unwrap_err().contains("bench:vault"));
    }

    #[test]
    fn the_document_has_a_block_for_every_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let document = std::fs::read_to_string(root.join(DOCUMENT)).unwrap();
        for name in TABLES {
            splice(&document, name, "figures").unwrap();
        }
    }
}
