//! The report file (`memtrim report`): the library writes it beside the page it was asked
//! through, the CLI reads it.

/// The report's format version: the library writes it, the CLI refuses another.
pub const VERSION: u64 = 1;

/// The report file's name is the page's followed by this.
pub const SUFFIX: &str = ".report";
