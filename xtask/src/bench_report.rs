//! Reads criterion's estimates and prints them against the budgets of DESIGN.md §8.

use std::path::Path;

use crate::Result;

/// Prints the table (filled in once the benchmarks exist).
pub fn print(_criterion_dir: &Path) -> Result {
    Ok(())
}
