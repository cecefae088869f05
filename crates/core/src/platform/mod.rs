//! The few file-system details that differ per OS, kept in one place so no logic needs
//! `cfg`. (The presence check, which differs far more, is its own crate: carekeep-presence.)

// Owner-only directories and files are `carekeep-private-files`'s, shared with the server,
// the app and xtask; these names are the ones the core's modules have always called.
pub(crate) use carekeep_private_files::{
    append as open_private_append, create as create_private_file, create_dir as create_private_dir, sync_dir,
};
