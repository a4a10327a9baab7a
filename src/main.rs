//! The `elicit` command line: `serve`, `migrate`, `simulate`, `eval`.

use clap::{Parser, Subcommand};

use elicit::app::{self, Application, Config};
use elicit::model::{Strategy, UpdateMethod};
use elicit::sim::{self, SimulationTask};
use elicit::store::SqlStore;
use elicit::store::sql::redact;

#[derive(Parser)]
#[command(
    name = "elicit",
    version,
    about = "Live adaptive preference elicitation"
)]
struct Cli {
    /// What to do; without a command, `serve`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (embedded SQLite store unless ELICIT_DATABASE_URL says otherwise).
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// Run simulated users with known coefficients through the engine and print learning curves.
    Simulate(SimulateArgs),
}

#[derive(clap::Args, Default)]
struct ServeArgs {
    /// Port to listen on (0 picks a free port); overrides ELICIT_PORT and the config files.
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind; overrides ELICIT_HOST.
    #[arg(long)]
    host: Option<String>,
}

#[derive(clap::Args)]
struct SimulateArgs {
    /// Number of base-reward dimensions J.
    #[arg(long, default_value_t = 6)]
    dims: usize,
    /// Items in each user's bank (all pairs are candidate questions).
    #[arg(long, default_value_t = 40)]
    bank: usize,
    #[arg(long, default_value_t = 100)]
    users: usize,
    #[arg(long, default_value_t = 30)]
    questions: usize,
    /// Norm of each user's coefficient vector.
    #[arg(long, default_value_t = 2.0)]
    scale: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// bald | dopt | random
    #[arg(long, default_value = "bald")]
    strategy: Strategy,
    /// adf | rvga | jj
    #[arg(long, default_value = "adf")]
    method: UpdateMethod,
    /// Rate of uniformly random answers (also given to the model as its lapse rate).
    #[arg(long, default_value_t = 0.0)]
    lapse: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => runtime()?.block_on(serve(args)),
        Command::Migrate => runtime()?.block_on(migrate()),
        Command::Simulate(args) => simulate(args),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load()?;
    if let Some(port) = args.port {
        config.port = port;
    }
    if let Some(host) = args.host {
        config.host = host;
    }
    app::init_tracing(config.log_json);
    tracing::info!(database = %redact(&config.database_url), "starting");
    let application = Application::build(&config).await?;
    let addr = application.local_addr();
    // One line on stdout that scripts and tests wait for.
    println!("listening on http://{addr}");
    application.serve(app::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let config = Config::load()?;
    app::init_tracing(config.log_json);
    let store = SqlStore::connect(&config.database_url, Default::default()).await?;
    store.migrate().await?;
    println!("migrations applied to {}", redact(&config.database_url));
    Ok(())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let task = SimulationTask {
        dims: args.dims,
        bank: args.bank,
        users: args.users,
        questions: args.questions,
        scale: args.scale,
        seed: args.seed,
        strategy: args.strategy,
        method: args.method,
        lapse: args.lapse,
    };
    let report = sim::run(&task).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "simulate: J={} bank={} users={} scale={} strategy={} method={} lapse={} seed={}",
            task.dims,
            task.bank,
            task.users,
            task.scale,
            task.strategy.as_str(),
            task.method.as_str(),
            task.lapse,
            task.seed
        );
        println!(
            "{:>4}  {:>9}  {:>7}  {:>6}",
            "k", "agreement", "cosine", "bits"
        );
        for p in &report.curve {
            println!(
                "{:>4}  {:>9.4}  {:>7.4}  {:>6.2}",
                p.k, p.agreement, p.cosine, p.bits
            );
        }
    }
    Ok(())
}
