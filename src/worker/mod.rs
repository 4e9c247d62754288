//! The worker thread and what it runs. Only its entry points are the crate's, for the top
//! (init, capi): the thread, a release, the report at exit; the rest is the worker's own.
mod arena_tops;
mod cost_model;
mod fault_cost;
mod heap_residency;
mod heap_stats;
mod limits;
mod memory_report;
mod page_file;
mod policy;
pub(crate) mod release;
pub(crate) mod report;
mod residency;
mod sampler;
mod siblings;
mod stagger;
pub(crate) mod thread;
