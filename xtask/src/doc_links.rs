//! The documents' links stay true: every relative link in the README and `docs/` names a
//! file that exists and, for `file.md#part`, a heading that does. Checked by a unit test, so
//! moving a module or renaming a heading without its link fails `cargo xtask test`.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The Markdown files a reader starts from.
    fn documents(root: &Path) -> Vec<PathBuf> {
        let mut files = vec![root.join("README.md")];
        let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "md"))
            .collect();
        docs.sort();
        files.extend(docs);
        files
    }

    /// Every `](target)` of a Markdown text.
    fn links(text: &str) -> Vec<String> {
        text.split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
            .collect()
    }

    /// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
    fn anchor(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    fn anchors(markdown: &str) -> Vec<String> {
        markdown
            .lines()
            .filter_map(|line| line.trim_start_matches('#').strip_prefix(' ').filter(|_| line.starts_with('#')))
            .map(anchor)
            .collect()
    }

    #[test]
    fn every_relative_link_in_the_documents_resolves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut broken = Vec::new();
        for document in documents(&root) {
            let text = std::fs::read_to_string(&document).unwrap();
            for link in links(&text) {
                if link.starts_with("http://") || link.starts_with("https://") {
                    continue;
                }
                let (path, part) = link.split_once('#').unwrap_or((&link, ""));
                let target = if path.is_empty() { document.clone() } else { document.parent().unwrap().join(path) };
                let name = document.strip_prefix(&root).unwrap().display().to_string();
                if !target.exists() {
                    broken.push(format!("{name}: {link} (no such file)"));
                } else if !part.is_empty() && target.extension().is_some_and(|e| e == "md") {
                    let headings = anchors(&std::fs::read_to_string(&target).unwrap());
                    if !headings.iter().any(|a| a == part) {
                        broken.push(format!("{name}: {link} (no such heading)"));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    }

    #[test]
    fn anchors_follow_github() {
        assert_eq!(anchor("The `carekeep` CLI"), "the-carekeep-cli");
        assert_eq!(
            anchor("8. Budgets (checked by benchmarks, not by timed tests)"),
            "8-budgets-checked-by-benchmarks-not-by-timed-tests"
        );
        assert_eq!(anchor("The app: size, start, memory"), "the-app-size-start-memory");
    }
}
