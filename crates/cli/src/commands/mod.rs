//! One module per noun of the `flotilla` CLI.

pub mod certificates;
pub mod clusters;
pub mod eks;
pub mod exec;
pub mod hosts;
pub mod images;
pub mod load_balancers;
pub mod logs;
pub mod services;
pub mod task_definitions;
pub mod tasks;
