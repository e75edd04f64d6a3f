//! `fractile-autoscaling-model`: the command line of the autoscaler model (the library,
//! `lib.rs`): reads the rendered manifests and a recorded metric series, writes the report.

use std::process::ExitCode;

use clap::Parser;
use fractile_autoscaling_model::ModelArgs;

#[derive(Parser)]
#[command(
    name = "fractile-autoscaling-model",
    version,
    about = "Models the KEDA/HPA autoscalers in the manifests on recorded metrics, and reports."
)]
struct Cli {
    #[command(flatten)]
    args: ModelArgs,
}

fn main() -> ExitCode {
    match fractile_autoscaling_model::run(Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fractile-autoscaling-model: {e:#}");
            ExitCode::FAILURE
        }
    }
}
