//! What runs in CPython's threads. The worker and the constructor reach it through pymalloc (and
//! the report through arenas); CPython's API, the fence, the layouts and the pool walk are its own.
mod api;
pub(crate) mod arenas;
mod fence;
mod layout;
mod pools;
pub(crate) mod pymalloc;
