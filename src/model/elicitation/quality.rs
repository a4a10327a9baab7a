//! Answer quality in a run: the lapse rate in force (the model's, or the user's estimate), the
//! consistency probes and attention checks it asks, the reliability verdict and the diagnostics,
//! all from the run's history as the model's answer log ([`AnswerLog`]).

use rand::Rng;

use super::*;

/// The reliability rule's verdict on the first `answers` answers of a run, with the EP run it
/// took (none before the rule's minimum number of answers).
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    answers: usize,
    unreliable: bool,
    run: Option<ReliabilityRun>,
}

impl Verdict {
    /// The verdict's EP run if it was taken over all of a history of `answers` answers.
    pub(super) fn run_over(&self, answers: usize) -> Option<&ReliabilityRun> {
        self.run.as_ref().filter(|_| self.answers == answers)
    }

    /// Approximate heap size in bytes.
    pub(super) fn size_bytes(&self) -> usize {
        self.run.as_ref().map_or(0, ReliabilityRun::size_bytes)
    }
}

/// The number of answers after which the reliability verdict on `answers` answers was taken:
/// every one of the first 32, then every 2^(⌊log₂ n⌋ − 4)-th (every 2nd up to 64, every 4th up to
/// 128, …). Judging fits EP to all the answers, O(n·J²), so taking it on every answer would make
/// a session's n-th answer cost grow with n; on this schedule it costs O(J²) per answer amortised,
/// and the verdict is never more than n/16 answers old. A function of the count alone, so every
/// replica, with a cached run or a rebuilt one, reaches the same verdict.
fn judged_at(answers: usize) -> usize {
    let step = 1usize << answers.max(1).ilog2().saturating_sub(4);
    answers - answers % step
}

impl Elicitation<'_> {
    /// The answer model in force now: the model's, with this user's estimated lapse rate when the
    /// run adapts it.
    pub fn noise(&self) -> NoiseModel {
        let mut noise = self.config.noise;
        if let Some(prior) = self.config.adaptive_lapse {
            // Only the answers' predictive probabilities: no need to build the log's directions
            // on every answer.
            let answered: Vec<AnsweredWith> = self
                .state
                .history
                .iter()
                .filter_map(|r| {
                    Some(AnsweredWith {
                        log_evidence: r.log_evidence?,
                        lapse: r.lapse,
                        outcomes: r.response.outcomes(&self.config.noise),
                    })
                })
                .collect();
            noise.lapse = reliability::lapse_estimate(&answered, prior);
        }
        noise
    }

    /// The answers in `records` as an answer log ([`history`]), directions from the bank.
    pub(super) fn log_of(&self, records: &[AnswerRecord]) -> AnswerLog {
        AnswerLog::new(records.iter().map(|r| self.step_of(r)).collect())
    }

    /// One answer as a step of the log: its direction(s) under the model's β, its likelihood
    /// with the lapse rate it was applied with.
    pub(super) fn step_of(&self, r: &AnswerRecord) -> Step {
        let noise = NoiseModel {
            lapse: r.lapse,
            ..self.config.noise
        };
        let threshold = self.config.strength_threshold;
        match &r.response {
            Response::Pair {
                pair,
                choice,
                strength,
            } => Step::comparison(
                self.bank.direction(*pair, noise.beta),
                Some((pair.a, pair.b, *choice)),
                (choice.outcome(), *strength),
                &noise,
                threshold,
                r.log_evidence,
            ),
            Response::Statement {
                dimension,
                prefer,
                strength,
            } => Step::comparison(
                statement_direction(self.prior.dim(), *dimension, noise.beta),
                None,
                (Some(statement_outcome(*prefer)), *strength),
                &noise,
                threshold,
                r.log_evidence,
            ),
            Response::Pick { shown, ranking } => Step::ranking(
                shown
                    .iter()
                    .map(|&i| self.bank.features(i) * noise.beta)
                    .collect(),
                ranking.clone(),
                &noise,
                r.log_evidence,
            ),
        }
    }

    /// The prior of the user's lapse rate that answer quality is judged under.
    pub(super) fn lapse_prior(&self) -> LapsePrior {
        self.config
            .adaptive_lapse
            .unwrap_or(self.config.lapse_prior)
    }

    /// The earlier question to re-ask now, sides swapped, if the probe rule says this question is
    /// a probe. Among the informative answers not yet probed and at least `min_gap` questions old,
    /// the one the current posterior most expects to be repeated: a consistent user then repeats
    /// it almost surely, while a random one flips half the time, so each probe says as much as a
    /// question can about which of the two the user is.
    pub(super) fn probe_due(&self) -> Option<Pair> {
        let rule = self.config.probes?;
        let history = &self.state.history;
        let number = history.len() + 1;
        if rule.every < 2 || !number.is_multiple_of(rule.every) {
            return None;
        }
        let probed: Vec<usize> = history.iter().filter_map(|r| r.repeats).collect();
        let noise = self.noise();
        let expected_repeat = |pair: Pair, choice: Choice| -> Option<f64> {
            let lik = noise.likelihood(choice.outcome()?).ok()?;
            let predictive = self
                .state
                .posterior
                .predictive(&self.bank.direction(pair, noise.beta));
            Some(log_predictive(
                predictive.mean,
                predictive.variance.max(0.0),
                &lik,
            ))
        };
        history
            .iter()
            .enumerate()
            .take(history.len().saturating_sub(rule.min_gap))
            .filter(|(i, r)| r.repeats.is_none() && !probed.contains(i))
            .filter_map(|(_, r)| match r.response {
                Response::Pair {
                    pair,
                    choice: choice @ (Choice::A | Choice::B),
                    ..
                } => Some((expected_repeat(pair, choice)?, pair)),
                _ => None,
            })
            .max_by(|x, y| x.0.total_cmp(&y.0))
            .map(|(_, pair)| pair.swapped())
    }

    /// The attention check to ask now, if the check rule says this question is one
    /// ([`CheckRule`]).
    pub(super) fn check_due<R: Rng + ?Sized>(
        &self,
        candidates: &Candidates,
        rng: &mut R,
    ) -> Option<Pair> {
        let rule = self.config.checks?;
        let number = self.state.history.len() + 1;
        if rule.every < 2 || !number.is_multiple_of(rule.every) {
            return None;
        }
        select::most_predictable(candidates, rng)
    }

    /// Consistency probes answered so far and how many of them contradicted the answer they
    /// repeat.
    pub fn consistency(&self) -> Consistency {
        self.log_of(&self.state.history).consistency()
    }

    /// The reliability rule's verdict on the run's first [`judged_at`] answers (all of them early
    /// in a session, at most n/16 short of them later), kept in the run state so that each is
    /// taken once. Before the rule's minimum number of answers it is always `false`, and the EP
    /// fit behind it is skipped.
    pub fn is_unreliable(&mut self) -> bool {
        let answers = judged_at(self.state.history.len());
        if let Some(verdict) = &self.state.verdict
            && verdict.answers == answers
        {
            return verdict.unreliable;
        }
        let judged = &self.state.history[..answers];
        let informative = judged.iter().filter(|r| r.log_evidence.is_some()).count();
        let (unreliable, run) = if informative >= self.config.reliability.min_answers {
            let (reliability, run) = self.reliability_of(judged);
            (reliability.unreliable, Some(run))
        } else {
            (false, None)
        };
        self.state.verdict = Some(Verdict {
            answers,
            unreliable,
            run,
        });
        unreliable
    }

    /// The answer-quality figures of the answers in `history`, from their leave-one-out
    /// predictive probabilities (an EP fit: O(answers·J²) a sweep), and that fit's run.
    pub(super) fn reliability_of(&self, history: &[AnswerRecord]) -> (Reliability, ReliabilityRun) {
        self.log_of(history)
            .reliability(&self.prior, self.lapse_prior(), &self.config.reliability)
    }

    /// Bits acquired, the evidence against random answering, per-answer surprise and the
    /// answer-quality figures.
    pub fn diagnostics(&self) -> Diagnostics {
        self.log_of(&self.state.history).diagnostics(
            (&self.prior, &self.state.posterior),
            None,
            self.lapse_prior(),
            &self.config.reliability,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::judged_at;

    #[test]
    fn verdicts_are_taken_on_every_early_answer_then_at_most_n_over_16_apart() {
        for n in 0..=32 {
            assert_eq!(judged_at(n), n);
        }
        for n in 33..5_000 {
            let at = judged_at(n);
            assert!(at <= n && n - at <= n / 16, "{n}: judged at {at}");
            assert_eq!(judged_at(at), at, "{n}: {at} is not on the schedule");
            assert!(judged_at(n + 1) >= at);
        }
        // O(n) answers judged in all over a session of n, so O(1) a session's answer, amortised.
        let judged: usize = (1..=4_096).filter(|&n| judged_at(n) == n).sum();
        assert!(judged <= 32 * 4_096, "{judged}");
    }
}
