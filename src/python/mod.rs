pub(crate) mod api;
pub(crate) mod arenas;
pub(crate) mod fence;
pub(crate) mod layout;
pub(crate) mod pools;
pub(crate) mod pymalloc;
