//! The command line: `candled` runs the supervisor; its subcommands are tools on the same config and database.

pub mod backfill;
pub mod export;
pub mod range;

/// A tool to run instead of the supervisor.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Export(export::ExportArgs),
    Backfill(backfill::BackfillArgs),
}
