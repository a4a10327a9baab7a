//! The onboarding clients of `elicit bench`: each keeps its share of the open sessions and answers
//! one question of each in turn, as a simulated user would.

use super::*;

/// A session a client keeps open: its id, its open question, the simulated user's λ and how
/// many questions it has answered.
pub(super) struct OpenSession {
    id: String,
    question: Value,
    lambda: Vec<f64>,
    answered: usize,
}

/// One client of the onboarding phase and the sessions it keeps open.
pub(super) struct Onboarding<'a> {
    api: &'a Api,
    setup: &'a Setup,
    options: &'a BenchOptions,
    client: usize,
    rng: StdRng,
    log: ClientLog,
    users: usize,
}

impl Onboarding<'_> {
    /// Opens a session for a new simulated user (timed); `None` after a 5xx (a 4xx is an error:
    /// the load is misconfigured).
    async fn open(&mut self) -> anyhow::Result<Option<OpenSession>> {
        let user = format!("{}-c{}-u{}", self.setup.model, self.client, self.users);
        self.users += 1;
        let lambda: Vec<f64> = (0..self.options.load.dims)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect();
        let started = Instant::now();
        let reply = self
            .api
            .send_retrying(
                reqwest::Method::POST,
                "/v1/sessions",
                Some(&json!({"model": self.setup.model, "user_id": user,
                             "max_questions": self.options.load.questions})),
                None,
                &mut self.log.retries,
            )
            .await?;
        match reply.status {
            201 => {}
            s if s >= 500 => {
                self.log.server_errors += 1;
                return Ok(None);
            }
            s => bail!("session refused: {s} {}", reply.body),
        }
        self.log.creates.push(started.elapsed());
        self.log.sessions_created += 1;
        self.log.users.push(user);
        Ok(Some(OpenSession {
            id: reply.body["id"].as_str().context("session id")?.to_string(),
            question: reply.body["question"].clone(),
            lambda,
            answered: 0,
        }))
    }

    /// Answers the session's open question (timed; 5xx retried with the same key until the
    /// deadline). Returns false when the session can go no further in this run.
    async fn answer(
        &mut self,
        session: &mut OpenSession,
        deadline: Instant,
    ) -> anyhow::Result<bool> {
        let position = session.answered + 1;
        let choice = simulated_choice(
            &session.question,
            &self.setup.features,
            &session.lambda,
            &mut self.rng,
        )?;
        let body = json!({"question_id": session.question["id"], "choice": choice});
        let key = format!("{}-{position}", session.id);
        let path = format!("/v1/sessions/{}/answers", session.id);
        let started = Instant::now();
        let reply = loop {
            let reply = self
                .api
                .send_retrying(
                    reqwest::Method::POST,
                    &path,
                    Some(&body),
                    Some(&key),
                    &mut self.log.retries,
                )
                .await?;
            if reply.status < 500 || Instant::now() >= deadline {
                break reply;
            }
            // The same answer again, with the same key: applied once whatever happened.
            self.log.server_errors += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let elapsed = started.elapsed();
        match reply.status {
            200 => {
                self.log.answers.push((position, elapsed));
                session.answered = position;
                session.question = reply.body["question"].clone();
                Ok(true)
            }
            s if s >= 500 => Ok(false),
            s => bail!("answer refused: {s} {}", reply.body),
        }
    }

    /// Finishes a session that stopped asking.
    async fn finish(&mut self, session: &OpenSession) -> anyhow::Result<()> {
        let reply = self
            .api
            .send_retrying(
                reqwest::Method::POST,
                &format!("/v1/sessions/{}/finish", session.id),
                None,
                None,
                &mut self.log.retries,
            )
            .await?;
        self.log.server_errors += usize::from(reply.status >= 500);
        self.log.sessions_finished += usize::from(reply.status == 200);
        Ok(())
    }
}

/// How many sessions each client keeps open: its share of `--sessions` (one by default).
pub(super) fn sessions_per_client(load: &Load, client: usize) -> usize {
    match load.sessions {
        None => 1,
        Some(n) => n / load.clients + usize::from(client < n % load.clients),
    }
}

/// One client's onboarding loop: it opens its share of the sessions, then until the deadline
/// answers one question of each in turn; a session that stops asking is finished and replaced.
/// With one session a client, that is whole sessions one after another.
pub(super) async fn onboard_loop(
    api: &Api,
    setup: &Setup,
    options: &BenchOptions,
    client: usize,
    duration: Duration,
) -> anyhow::Result<ClientLog> {
    let mut client_state = Onboarding {
        api,
        setup,
        options,
        client,
        rng: StdRng::seed_from_u64(options.load.seed ^ (client as u64).wrapping_mul(0x9e37_79b9)),
        log: ClientLog::default(),
        users: 0,
    };
    let mut open: Vec<Option<OpenSession>> = Vec::new();
    for _ in 0..sessions_per_client(&options.load, client) {
        open.push(client_state.open().await?);
    }
    let started = Instant::now();
    let deadline = started + duration;
    let mut pacer = Pacer::new(options.load.rate, options.load.clients);
    let mut slot = 0;
    while Instant::now() < deadline {
        let session = match open[slot].take() {
            Some(session) => session,
            None => match client_state.open().await? {
                Some(session) => session,
                None => continue,
            },
        };
        let mut session = session;
        let mut going = true;
        if !session.question.is_null() {
            pacer.wait().await;
            going = client_state.answer(&mut session, deadline).await?;
        }
        if session.question.is_null() {
            client_state.finish(&session).await?;
        } else if going {
            open[slot] = Some(session);
        }
        slot = (slot + 1) % open.len();
    }
    client_state.log.timed = started.elapsed();
    Ok(client_state.log)
}

/// A simulated user's answer: "a" with probability σ(λᵀ(φa − φb)).
pub(super) fn simulated_choice(
    question: &Value,
    features: &[Vec<f64>],
    lambda: &[f64],
    rng: &mut StdRng,
) -> anyhow::Result<&'static str> {
    let reward = |k: usize| -> anyhow::Result<f64> {
        let id = question["items"][k]["id"].as_str().context("item id")?;
        let i: usize = id.trim_start_matches('i').parse().context("item index")?;
        Ok(features[i].iter().zip(lambda).map(|(f, l)| f * l).sum())
    };
    let margin = reward(0)? - reward(1)?;
    let p_a = 1.0 / (1.0 + (-margin).exp());
    Ok(if rng.random::<f64>() < p_a { "a" } else { "b" })
}
