//! The `elicit` command line: `serve`, `migrate`, `simulate`, `eval`, `bench`.

use clap::{Parser, Subcommand};

use elicit::app::{self, Application, Config};
use std::path::PathBuf;

use anyhow::Context;
use elicit::eval::{self, EqualPairs, EvalOptions, PriorKind, data::Dataset};
use elicit::model::kway::AnswerFormat;
use elicit::model::{NoiseModel, Strategy, UpdateMethod};
use elicit::sim::{self, SimulationTask};
use elicit::store::SqlStore;
use elicit::store::redact;

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
    /// Evaluate question selection on real users' ratings: learning curves, ceiling, baseline.
    Eval(EvalArgs),
    /// Load a running server: onboarding sessions and scoring; answers/s, scores/s, latency.
    Bench(BenchArgs),
    /// Learn item features and a population prior from many users' comparisons.
    Fit(FitArgs),
    /// Turn ratings into pairwise comparisons (the input of `elicit fit`).
    Comparisons(ComparisonsArgs),
}

#[derive(clap::Args)]
struct ComparisonsArgs {
    /// `user_id,item_id,rating[,split]` with a header.
    #[arg(long)]
    ratings: PathBuf,
    /// Where to write `user_id,item_a,item_b,winner,split`.
    #[arg(long)]
    out: PathBuf,
    /// Pairs sampled per user, at most.
    #[arg(long, default_value_t = 500)]
    max_per_user: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct FitArgs {
    /// `user_id,item_a,item_b,winner[,split]` with a header; only `train` rows when split is there.
    #[arg(long)]
    comparisons: PathBuf,
    /// J, the number of base rewards to learn.
    #[arg(long)]
    dims: usize,
    /// Write the learned features as `item_id,f1..fJ` (what `elicit eval --items` reads).
    #[arg(long)]
    items_out: Option<PathBuf>,
    /// Write the population prior (what `elicit eval --prior` reads).
    #[arg(long)]
    prior_out: Option<PathBuf>,
    /// A CSV with `item_id` and `title` columns: the ends of each dimension are listed by title
    /// (`datasets/movielens/item_info.csv`).
    #[arg(long)]
    titles: Option<PathBuf>,
    /// ℓ₂ penalty on users' coefficients and items' features.
    #[arg(long, default_value_t = 0.05)]
    l2: f64,
    #[arg(long, default_value_t = 300)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Create this model on the server at --target with the learned items and prior.
    #[arg(long, requires = "target")]
    model: Option<String>,
    #[arg(long, requires = "model")]
    target: Option<String>,
    /// Admin key for --target.
    #[arg(long, env = "ELICIT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    target: String,
    /// An admin key (the bench creates and finally deletes its own model).
    #[arg(long, env = "ELICIT_API_KEY", hide_env_values = true)]
    api_key: String,
    #[command(flatten)]
    load: elicit::bench::Load,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// `item_id,f1..fJ` with a header.
    #[arg(long)]
    items: PathBuf,
    /// `user_id,item_id,rating[,split]` with a header; higher ratings win.
    #[arg(long)]
    ratings: PathBuf,
    /// Evaluate the users of this split (ignored if the file has no split column).
    #[arg(long, default_value = "test")]
    split: String,
    #[arg(long, default_value_t = 30)]
    questions: usize,
    /// Comma-separated: bald,dopt,random,epig (epig needs --targets).
    #[arg(long, default_value = "bald,dopt,random", value_delimiter = ',')]
    strategy: Vec<Strategy>,
    /// adf | rvga | jj
    #[arg(long, default_value = "adf")]
    method: UpdateMethod,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// isotropic: N(0, I); train: estimated from the train split's users; refit (with
    /// --target): learned by the server's prior:refit from the train users' sessions; or the
    /// path of a prior file written by `elicit fit --prior-out`.
    #[arg(long, default_value = "isotropic")]
    prior: PriorKind,
    /// The model's answer scale β.
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// The model's lapse rate ε.
    #[arg(long, default_value_t = 0.0)]
    lapse: f64,
    /// The model's Rao–Kupper tie threshold η (> 0: equal ratings are answered `tie`, else `skip`).
    #[arg(long, default_value_t = 0.0)]
    tie_threshold: f64,
    /// Users with more rated items are evaluated on a seeded sample of this many.
    #[arg(long, default_value_t = 200)]
    max_items: usize,
    /// exclude: only pairs the user rated differently are asked (reference protocol);
    /// ask: any pair of rated items, equal ratings answered tie or skip.
    #[arg(long, value_enum, default_value = "exclude")]
    equal_pairs: EqualPairs,
    /// Items a question shows: 2 for pairs, 3 to 6 to pick one (the highest-rated; in-process).
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// With --choices 3 to 6, ask for an order instead of one pick: `full` (all items) or M (the
    /// top M), derived from the user's ratings; the order stops at equal ratings.
    #[arg(long, value_parser = parse_rank)]
    rank: Option<AnswerFormat>,
    /// Target items, one item id a line (a header line `item_id` is allowed): questions never
    /// show them, and accuracy is measured on each user's pairs among them (in-process).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Write the learning curves as an SVG plot.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run the users through this server's HTTP API instead of in-process.
    #[arg(long)]
    target: Option<String>,
    /// API key for --target (admin: the evaluator creates a model).
    #[arg(long, env = "ELICIT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
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
    /// bald | dopt | random | epig (pairs aimed at held-out target items)
    #[arg(long, default_value = "bald")]
    strategy: Strategy,
    /// adf | rvga | jj
    #[arg(long, default_value = "adf")]
    method: UpdateMethod,
    /// Rate of uniformly random answers of the simulated users.
    #[arg(long, default_value_t = 0.0)]
    lapse: f64,
    /// The lapse rate the engine assumes: a rate (0 = unaware of lapses), or `auto` to estimate it
    /// per user from the answers. Default: the simulated rate.
    #[arg(long)]
    model_lapse: Option<sim::ModelLapse>,
    /// genuine (answers from a true λ) | random (coin flips)
    #[arg(long, value_enum, default_value = "genuine")]
    responders: sim::Responders,
    /// Every N-th question re-asks an earlier one (sides swapped) as a consistency probe; 0 = none.
    #[arg(long, default_value_t = 0)]
    probe_every: usize,
    /// Every N-th question is an attention check, the unasked pair whose answer the posterior is
    /// surest of; 0 = none.
    #[arg(long, default_value_t = 0)]
    check_every: usize,
    /// Items a question shows: 2 for pairs, 3 to 6 to pick one of k.
    #[arg(long, default_value_t = 2)]
    choices: usize,
    /// With --choices 3 to 6, ask for an order instead of one pick: `full` (all items) or M (the
    /// top M), answered by the simulated users' Plackett–Luce chain of picks.
    #[arg(long, value_parser = parse_rank)]
    rank: Option<AnswerFormat>,
    /// Graded pairwise answers ("slightly" or "clearly" better) with this strength threshold θ
    /// (an ordered logit), for the simulated users and the engine.
    #[arg(long)]
    graded: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// `--rank full` or `--rank M`.
fn parse_rank(value: &str) -> Result<AnswerFormat, String> {
    match value {
        "full" => Ok(AnswerFormat::Rank),
        m => m
            .parse::<usize>()
            .map(AnswerFormat::Top)
            .map_err(|_| format!("'{m}' is neither `full` nor a number of items")),
    }
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => runtime()?.block_on(serve(args)),
        Command::Migrate => runtime()?.block_on(migrate()),
        Command::Simulate(args) => simulate(args),
        Command::Eval(args) => evaluate(args),
        Command::Bench(args) => runtime()?.block_on(bench(args)),
        Command::Fit(args) => fit(args),
        Command::Comparisons(args) => {
            let written = elicit::eval::learn::comparisons_from_ratings(
                &args.ratings,
                &args.out,
                args.max_per_user,
                args.seed,
            )?;
            eprintln!("{written} comparisons written to {}", args.out.display());
            Ok(())
        }
    }
}

fn fit(args: FitArgs) -> anyhow::Result<()> {
    use elicit::eval::learn;
    let titles = match &args.titles {
        Some(path) => learn::read_titles(path)?,
        None => Default::default(),
    };
    let set = learn::ComparisonSet::load(&args.comparisons)?;
    let options = learn::FitOptions {
        basis: elicit::model::basis::BasisOptions {
            dims: args.dims,
            l2: args.l2,
            epochs: args.epochs,
            seed: args.seed,
            ..Default::default()
        },
        held_out: 0.1,
    };
    let bar = indicatif::ProgressBar::new(args.epochs as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("fit {bar:40} {pos}/{len} epochs, loss {msg}")
            .expect("a valid template"),
    );
    let fitted = learn::fit(&set, &options, |_, loss| {
        bar.inc(1);
        bar.set_message(format!("{loss:.4}"));
    })?;
    bar.finish_and_clear();
    if let Some(path) = &args.items_out {
        fitted.write_items(path)?;
    }
    if let Some(path) = &args.prior_out {
        fitted.write_prior(path)?;
    }
    if let (Some(model), Some(target)) = (&args.model, &args.target) {
        let key = args
            .api_key
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--target needs --api-key (or ELICIT_API_KEY)"))?;
        runtime()?.block_on(fitted.load_into(target, key, model))?;
        eprintln!("created model '{model}' on {target}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&fitted.report)?);
    } else {
        print!("{}", learn::table(&fitted.report, &titles));
    }
    Ok(())
}

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let options = elicit::bench::BenchOptions {
        target: args.target,
        api_key: args.api_key,
        load: args.load,
    };
    let report = elicit::bench::run(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", elicit::bench::table(&report));
    }
    Ok(())
}

fn evaluate(args: EvalArgs) -> anyhow::Result<()> {
    let noise = NoiseModel {
        beta: args.beta,
        lapse: args.lapse,
        tie_threshold: args.tie_threshold,
    };
    noise.validate()?;
    anyhow::ensure!(
        !args.strategy.is_empty(),
        "--strategy needs at least one strategy"
    );
    anyhow::ensure!(args.questions >= 1, "--questions must be at least 1");
    anyhow::ensure!(
        (2..=elicit::model::kway::MAX_CHOICES).contains(&args.choices),
        "--choices must be in 2..={}",
        elicit::model::kway::MAX_CHOICES
    );
    if let Some(format) = args.rank {
        anyhow::ensure!(
            args.choices >= 3,
            "--rank orders questions of three or more items: it needs --choices 3 to 6"
        );
        format.check(args.choices)?;
    }
    anyhow::ensure!(
        args.target.is_none()
            || (args.choices == 2
                && args.targets.is_none()
                && !args.strategy.contains(&Strategy::Epig)),
        "--choices above 2, --targets and epig run in-process: the HTTP API asks plain pairs"
    );
    anyhow::ensure!(
        !args.strategy.contains(&Strategy::Epig) || args.targets.is_some(),
        "--strategy epig aims at target items: it needs --targets"
    );
    let dataset = Dataset::load(&args.items, &args.ratings)?;
    let targets = args
        .targets
        .as_deref()
        .map(|path| dataset.item_set(path))
        .transpose()?;
    let options = EvalOptions {
        split: Some(args.split),
        questions: args.questions,
        strategies: args.strategy,
        method: args.method,
        seed: args.seed,
        prior: args.prior,
        noise,
        max_items_per_user: args.max_items.max(2),
        max_scored_pairs: 2000,
        equal_pairs: args.equal_pairs,
        choices: args.choices,
        answer: args.rank.unwrap_or_default(),
        targets,
    };
    let prior = eval::train_prior(&dataset, &options)?;
    let tasks = eval::tasks(&dataset, &options);
    let started = std::time::Instant::now();
    anyhow::ensure!(
        options.prior != PriorKind::Refit || args.target.is_some(),
        "--prior refit learns the prior on a server: it needs --target"
    );
    let report = match &args.target {
        None => eval::evaluate(&dataset, &tasks, &prior, &options, |task, strategy| {
            eval::run_in_process(&dataset, task, &prior, strategy, &options)
        })?,
        Some(target) => {
            let key = args
                .api_key
                .as_deref()
                .context("--target needs --api-key or ELICIT_API_KEY")?;
            let remote = eval::remote::Remote::connect(target, key, &dataset, &prior, &options)?;
            let prior = if options.prior == PriorKind::Refit {
                remote.learn_prior(&dataset, &options)?
            } else {
                prior
            };
            eval::evaluate(&dataset, &tasks, &prior, &options, |task, strategy| {
                remote.run_user(&dataset, task, strategy, &options)
            })?
        }
    };
    eprintln!(
        "evaluated {} users in {:.1} s",
        report.users,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.plot {
        let title = format!(
            "{} users, {} updates, {:?} prior, equal pairs {:?}",
            report.users,
            options.method.as_str(),
            options.prior,
            options.equal_pairs
        );
        eval::plot::write_svg(&report, &title, path)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", eval::table(&report));
    }
    Ok(())
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
    if config.demo {
        println!("  the demo: open http://{addr}/demo in a browser");
    }
    if let Some(key) = application.first_run_key() {
        // Shown once, as Jupyter shows its token: only its hash is stored.
        println!(
            "\n  No admin key was configured and the store had none, so one was created.\n  \
             It is shown only this once (only its hash is stored); keep it:\n\n      {key}\n\n  \
             Try:  curl -H 'Authorization: Bearer {key}' http://{addr}/v1/models\n"
        );
    }
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
        model_lapse: args
            .model_lapse
            .unwrap_or(sim::ModelLapse::Fixed(args.lapse)),
        responders: args.responders,
        probe_every: args.probe_every,
        check_every: args.check_every,
        choices: args.choices,
        answer: args.rank.unwrap_or_default(),
        graded: args.graded,
    };
    let report = sim::run(&task).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "simulate: J={} bank={} users={} scale={} choices={} strategy={} method={} lapse={} model-lapse={:?} responders={:?} seed={}",
            task.dims,
            task.bank,
            task.users,
            task.scale,
            task.choices,
            task.strategy.as_str(),
            task.method.as_str(),
            task.lapse,
            task.model_lapse,
            task.responders,
            task.seed
        );
        println!(
            "{:>4}  {:>9}  {:>6}  {:>7}  {:>6}  {:>10}  {:>7}  {:>10}  {:>5}  {:>6}  {:>10}",
            "k",
            "agreement",
            "se",
            "cosine",
            "bits",
            "unreliable",
            "log2 BF",
            "seq. flag",
            "lapse",
            "floor",
            "used/floor"
        );
        let or_dash = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
        };
        for p in &report.curve {
            println!(
                "{:>4}  {:>9.4}  {:>6.4}  {:>7.4}  {:>6.2}  {:>10.3}  {:>7.2}  {:>10.3}  {:>5.3}  {:>6}  {:>10}",
                p.k,
                p.agreement,
                p.agreement_se,
                p.cosine,
                p.bits,
                p.flagged_unreliable,
                p.log2_bayes_factor,
                p.flagged_sequential,
                p.lapse_rate,
                or_dash(p.floor_questions, 2),
                or_dash(p.floor_ratio, 2)
            );
        }
    }
    Ok(())
}
