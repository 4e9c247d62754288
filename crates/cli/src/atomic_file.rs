//! The CLI writes its files through the writer it shares with the library.
pub use memtrim_common::atomic_file::replace;
