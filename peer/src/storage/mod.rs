//! A torrent's bytes on disk: where they go ([`layout`]), the files themselves ([`files`]),
//! and the disk thread that connection tasks talk to ([`disk`]).
//!
//! ```text
//!  Metainfo ──Layout::from_metainfo──▶ Layout ──Storage::open──▶ Storage ──Disk::spawn──▶ Disk
//!   (pure)      checked paths, pieces    (sync, files created)     (async handle, one thread)
//! ```
//!
//! A restart resumes: [`Storage::open`] keeps the files it finds, and
//! [`Storage::check_existing`] hashes the pieces they hold, before the storage moves to its
//! thread.

pub mod disk;
pub mod files;
pub mod layout;
#[cfg(test)]
mod testing;

pub use disk::{Disk, Written};
pub use files::{Allocation, MAX_OPEN_FILES, Storage, StorageError};
pub use layout::{BlockError, Layout, LayoutError, LayoutFile, Span};
