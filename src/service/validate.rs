//! Every check of what a client sends: ids, feature vectors, model settings, session settings.
//! Each failure is a [`ServiceError::Invalid`] naming the field, which the API answers with a 422
//! problem.

use std::collections::HashSet;

use crate::model::Strategy;
use crate::model::elicitation::{CheckRule, ProbeRule};
use crate::model::kway::{AnswerFormat, MAX_CHOICES};
use crate::model::reliability::{LapsePrior, ReliabilityRule};
use crate::model::summary::DimensionEnds;
use crate::store::GuardSpec;

use super::ServiceError;
use super::bank::LoadedModel;
use super::limits::{MAX_END_LABEL_LEN, MAX_ID_LEN, MAX_MODEL_NAME_LEN};

/// Checks an identifier: non-empty, at most `max` characters, no control characters.
pub(crate) fn check_id(field: &str, value: &str, max: usize) -> Result<(), ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ServiceError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks a feature vector: J finite numbers.
pub(crate) fn check_features(
    field: &str,
    features: &[f64],
    dimensions: usize,
) -> Result<(), ServiceError> {
    if features.len() != dimensions {
        return Err(ServiceError::invalid(
            field,
            format!(
                "has {} values, the model has {dimensions} dimensions",
                features.len()
            ),
        ));
    }
    if let Some(i) = features.iter().position(|v| !v.is_finite()) {
        return Err(ServiceError::invalid(
            format!("{field}[{i}]"),
            "must be a finite number",
        ));
    }
    Ok(())
}

pub(crate) fn check_model_name(name: &str) -> Result<(), ServiceError> {
    check_id("name", name, MAX_MODEL_NAME_LEN)?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ServiceError::invalid(
            "name",
            "may contain only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

pub(crate) fn check_reliability(rule: &ReliabilityRule) -> Result<(), ServiceError> {
    if !rule.min_log2_bayes_factor.is_finite() || rule.min_log2_bayes_factor.abs() > 1e6 {
        return Err(ServiceError::invalid(
            "reliability.min_log2_bayes_factor",
            "must be a finite number of bits in [-1e6, 1e6]",
        ));
    }
    if rule.min_answers > 10_000 {
        return Err(ServiceError::invalid(
            "reliability.min_answers",
            "must be at most 10000",
        ));
    }
    Ok(())
}

/// Labels of dimensions' ends: none, or one entry per dimension, each label a short text.
pub(crate) fn check_ends(
    ends: &[Option<DimensionEnds>],
    dimensions: usize,
) -> Result<(), ServiceError> {
    if !ends.is_empty() && ends.len() != dimensions {
        return Err(ServiceError::invalid(
            "ends",
            format!("must have one entry per dimension ({dimensions}), null for none"),
        ));
    }
    for (d, labels) in ends.iter().enumerate() {
        if let Some(labels) = labels {
            check_id(&format!("ends[{d}].low"), &labels.low, MAX_END_LABEL_LEN)?;
            check_id(&format!("ends[{d}].high"), &labels.high, MAX_END_LABEL_LEN)?;
        }
    }
    Ok(())
}

pub(crate) fn check_guard(guard: &GuardSpec, dimensions: &[String]) -> Result<(), ServiceError> {
    if let Some(bits) = guard.max_divergence_bits {
        check_budget("guard.max_divergence_bits", bits)?;
    }
    let mut seen = HashSet::new();
    for (i, name) in guard.fixed_dimensions.iter().enumerate() {
        let field = format!("guard.fixed_dimensions[{i}]");
        if !dimensions.contains(name) {
            return Err(ServiceError::invalid(
                field,
                format!("'{name}' is not a dimension of the model"),
            ));
        }
        if !seen.insert(name) {
            return Err(ServiceError::invalid(
                field,
                format!("'{name}' appears twice"),
            ));
        }
    }
    Ok(())
}

/// A divergence budget in bits: finite and not negative.
pub(crate) fn check_budget(field: &str, bits: f64) -> Result<(), ServiceError> {
    if !(0.0..=1e6).contains(&bits) {
        return Err(ServiceError::invalid(
            field,
            "must be a number of bits in [0, 1e6]",
        ));
    }
    Ok(())
}

/// Questions show 2 to [`MAX_CHOICES`] items; EPIG aims pairs only; a top-m answer orders fewer
/// items than its questions show (than the most a question may show, for pair questions: the
/// format then applies to sessions that ask for more items).
pub(crate) fn check_questions(
    strategy: Strategy,
    choices: usize,
    answer: AnswerFormat,
) -> Result<(), ServiceError> {
    answer.check(if choices > 2 { choices } else { MAX_CHOICES })?;
    if !(2..=MAX_CHOICES).contains(&choices) {
        return Err(ServiceError::invalid(
            "choices",
            format!("must be between 2 and {MAX_CHOICES}"),
        ));
    }
    if strategy == Strategy::Epig && choices > 2 {
        return Err(ServiceError::invalid(
            "choices",
            "strategy epig asks pairs: choices must be 2",
        ));
    }
    Ok(())
}

/// A model's target items: ids, none twice (the bank may not hold them yet).
pub(crate) fn check_targets(targets: &[String]) -> Result<(), ServiceError> {
    const MAX_TARGETS: usize = 1000;
    if targets.len() > MAX_TARGETS {
        return Err(ServiceError::invalid(
            "targets",
            format!("at most {MAX_TARGETS} items"),
        ));
    }
    let mut seen = HashSet::with_capacity(targets.len());
    for (i, id) in targets.iter().enumerate() {
        check_id(&format!("targets[{i}]"), id, MAX_ID_LEN)?;
        if !seen.insert(id) {
            return Err(ServiceError::invalid(
                format!("targets[{i}]"),
                format!("'{id}' appears twice"),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_checks(checks: &CheckRule) -> Result<(), ServiceError> {
    if !(2..=1000).contains(&checks.every) {
        return Err(ServiceError::invalid(
            "checks.every",
            "must be between 2 and 1000",
        ));
    }
    Ok(())
}

pub(crate) fn check_probes(probes: &ProbeRule) -> Result<(), ServiceError> {
    if !(2..=1000).contains(&probes.every) {
        return Err(ServiceError::invalid(
            "probes.every",
            "must be between 2 and 1000",
        ));
    }
    if !(1..=1000).contains(&probes.min_gap) {
        return Err(ServiceError::invalid(
            "probes.min_gap",
            "must be between 1 and 1000",
        ));
    }
    Ok(())
}

pub(crate) fn check_lapse_prior(prior: &LapsePrior) -> Result<(), ServiceError> {
    for (field, value) in [("lapse_per_user.a", prior.a), ("lapse_per_user.b", prior.b)] {
        if !(value.is_finite() && value > 0.0 && value <= 1e6) {
            return Err(ServiceError::invalid(field, "must be a number in (0, 1e6]"));
        }
    }
    Ok(())
}

/// A list of items (`field`) must name at least two different items of the bank.
pub(crate) fn check_known_items(
    field: &str,
    items: &[String],
    bank: &LoadedModel,
) -> Result<(), ServiceError> {
    if items.len() < 2 {
        return Err(ServiceError::invalid(field, "must name at least two items"));
    }
    let mut seen = HashSet::with_capacity(items.len());
    for (i, id) in items.iter().enumerate() {
        if !seen.insert(id) {
            return Err(ServiceError::invalid(
                format!("{field}[{i}]"),
                format!("'{id}' appears twice"),
            ));
        }
        if bank.item_index(id).is_none() {
            return Err(ServiceError::invalid(
                format!("{field}[{i}]"),
                format!("unknown item '{id}'"),
            ));
        }
    }
    Ok(())
}

/// Excluded pairs must name two different known items; at most one per possible pair.
pub(crate) fn check_excluded_pairs(
    pairs: &[[String; 2]],
    bank: &LoadedModel,
) -> Result<(), ServiceError> {
    const MAX_EXCLUDED: usize = 50_000;
    if pairs.len() > MAX_EXCLUDED {
        return Err(ServiceError::invalid(
            "exclude_pairs",
            format!("at most {MAX_EXCLUDED} pairs"),
        ));
    }
    for (i, [a, b]) in pairs.iter().enumerate() {
        if a == b {
            return Err(ServiceError::invalid(
                format!("exclude_pairs[{i}]"),
                "names the same item twice",
            ));
        }
        for id in [a, b] {
            if bank.item_index(id).is_none() {
                return Err(ServiceError::invalid(
                    format!("exclude_pairs[{i}]"),
                    format!("unknown item '{id}'"),
                ));
            }
        }
    }
    Ok(())
}

/// Session ids are UUIDs: anything else names no session.
pub(crate) fn check_session_id(id: &str) -> Result<(), ServiceError> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ServiceError::NotFound(format!("session '{id}'"))),
    }
}
