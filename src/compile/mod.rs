//! Step 3: compile every planned source. [`source`] reads one source and checks its pycs, then
//! puts the compiled levels in place; [`pool`] keeps one interpreter worker per thread busy with
//! them; [`cache`] keeps compiled results across runs.

pub mod cache;
pub mod pool;
pub mod source;
