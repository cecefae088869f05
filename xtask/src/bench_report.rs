//! `docs/benchmarks.md`: people write its prose, `cargo xtask bench` its figures, so no figure
//! is ever edited by hand. Each table sits between `<!-- bench:NAME -->` and
//! `<!-- /bench:NAME -->`. A run first clears the tables an earlier run left in `target/`,
//! then replaces those its benchmarks wrote (`target/bench-NAME.md`) with those figures, the
//! machine and the date, and leaves the others as they were (a filtered run measures only
//! some). Clearing first rather than comparing file times: a file system's clock is coarser
//! than the process's, so "written after the start" cannot be told by time alone.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tables, by the name their benchmark writes under `target/bench-NAME.md`.
pub const TABLES: [&str; 7] = ["vault", "server", "login", "sync", "records-in", "backup", "app"];

/// Where the document lives, from the workspace root.
const DOCUMENT: &str = "docs/benchmarks.md";

/// Where the benchmark called `name` writes its table.
fn table_path(root: &Path, name: &str) -> PathBuf {
    root.join(format!("target/bench-{name}.md"))
}

/// Removes the tables an earlier run left, before a run, so only this run's are put in.
pub fn clear(root: &Path) -> Result<(), String> {
    for name in TABLES {
        match std::fs::remove_file(table_path(root, name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("bench-{name}.md: {e}")),
            _ => {}
        }
    }
    Ok(())
}

/// Puts every table this run wrote into the document; returns the names updated.
pub fn update(root: &Path) -> Result<Vec<&'static str>, String> {
    let path = root.join(DOCUMENT);
    let mut document = std::fs::read_to_string(&path).map_err(|e| format!("{DOCUMENT}: {e}"))?;
    let stamp = format!("_Measured on {} ({}) by `cargo xtask bench`._", machine(), today());
    let mut updated = Vec::new();
    for name in TABLES {
        let table = table_path(root, name);
        if !table.exists() {
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
    fn a_run_writes_the_tables_it_measured_and_keeps_the_others() {
        let root = std::env::temp_dir().join(format!("carekeep-bench-report-{}", std::process::id()));
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("target")).unwrap();
        let mut document = String::from("# Benchmarks\n");
        for name in TABLES {
            document += &["<!-- bench:", name, " -->\nold ", name, "\n<!-- /bench:", name, " -->\n"].concat();
        }
        std::fs::write(root.join(DOCUMENT), document).unwrap();
        // A table left by an earlier run; then this run starts and measures only sync.
        std::fs::write(table_path(&root, "vault"), "| stale |\n").unwrap();
        clear(&root).unwrap();
        std::fs::write(table_path(&root, "sync"), "| sync | 1.0s |\n").unwrap();

        assert_eq!(update(&root).unwrap(), ["sync"]);
        let document = std::fs::read_to_string(root.join(DOCUMENT)).unwrap();
        assert!(document.contains("by `cargo xtask bench`._\n\n| sync | 1.0s |\n<!-- /bench:sync -->"), "{document}");
        assert!(document.contains("<!-- bench:vault -->\nold vault\n"), "an old table is no new figure: {document}");
        assert!(!document.contains("stale"));
        std::fs::remove_dir_all(&root).unwrap();
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
