//! mailroom's one integration-test binary; each module is one area, sharing the harness in
//! `mailroom_tests`.

mod assist;
mod aws;
mod conversation;
mod digest;
mod edge_cases;
mod erase;
mod faults;
mod fuzz;
mod golden;
mod hostile;
mod lifecycle;
mod operate;
mod retrain;
