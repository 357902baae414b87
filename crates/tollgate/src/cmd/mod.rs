//! One module per subcommand: each has an `Args` (clap) and a `run` returning the exit code.

pub mod bench;
pub mod check;
pub mod demo;
pub mod keygen;
pub mod queue;
pub mod send;
pub mod serve;
pub mod sign;
pub mod verify;
