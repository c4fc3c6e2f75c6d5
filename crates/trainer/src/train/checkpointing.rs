//! Checkpoints of a run: the resume bundle (weights with parameter ids, optimizer moments, the
//! loop's [`SavedState`], EMA/SWA averages) and weights-only exports, written through the
//! store's retention policies and reported in telemetry.

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder as _};
use burn::tensor::backend::AutodiffBackend;
use checkpoints::store::metric_map;
use checkpoints::{CheckpointFile, Kind, Meta, Metric, SCHEMA_VERSION, SaveReport, Trigger};
use serde_json::json;

use super::resume::{SavedOom, SavedState};
use super::{Run, TrainError, now_unix};
use crate::task::Task;
use crate::telemetry::TelemetryCounters;

/// The parameter ids of the weights, as JSON, in a checkpoint's extra metadata.
pub(super) const PARAM_IDS: &str = "trainyard.param_ids";
/// Prefix of the EMA's tensors inside a resume bundle.
pub(super) const EMA_PREFIX: &str = "ema.";
/// Weights-only export of the EMA, refreshed at every save.
const EMA_EXPORT: &str = "model_ema.safetensors";
/// Prefix of the SWA average's tensors inside a resume bundle.
pub(super) const SWA_PREFIX: &str = "swa.";
/// Weights-only export of the SWA average, refreshed at every save once averaging started.
const SWA_EXPORT: &str = "model_swa.safetensors";
pub(super) const OPTIMIZER_BLOB: &str = "optimizer";
pub(super) const STATE_BLOB: &str = "trainer";

/// How optimizer state is serialised into the bundle.
pub(super) type Recorder = BinBytesRecorder<FullPrecisionSettings>;

/// Weights of `model` (with their parameter ids) as a checkpoint file without blobs.
fn weights_file<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, meta: Meta) -> CheckpointFile {
    let (tensors, ids) = checkpoints::module::weights_of::<B, M>(model);
    // A map of strings always serialises.
    let ids = serde_json::to_string(&ids).unwrap_or_default();
    let extra = BTreeMap::from([(PARAM_IDS.to_string(), ids)]);
    CheckpointFile { meta, tensors, blobs: BTreeMap::new(), extra }
}

impl<B: AutodiffBackend, T: Task<B>> Run<'_, B, T> {
    /// The loop state a resumed run needs, as of now.
    fn saved_state(&self) -> SavedState {
        let (st, spec, plan) = (&self.st, &self.cfg.optimizer.scheduler, &self.plan);
        SavedState {
            step: st.step,
            epoch: st.epoch,
            position: st.position,
            best: st.best.map(|(s, v)| (s, Metric(v))),
            first_loss: Metric(self.first_loss),
            last_loss: Metric(self.last_loss),
            validated_at: self.validated_at,
            telemetry: TelemetryCounters { last_checkpoint: st.step, ..self.tel.counters() },
            policies: self.policies.iter().map(|p| (p.name().to_string(), p.state())).collect(),
            rng: json!({"scheme": "data order from (seed, epoch); backend reseeded from (seed, step)", "seed": self.cfg.seed}),
            schedule: json!({"name": spec.name, "interval": spec.interval, "index": plan.index(st.step),
                             "next_lr": self.scheduler.lr_at(plan.index(st.step))}),
            scheduler: Some(self.scheduler.state()),
            loss_scaler: None,
            ema_updates: self.ema.as_ref().map(|e| e.updates),
            swa_updates: self.swa.as_ref().map(|w| w.updates),
            oom: Some(SavedOom { rung: self.rung, knob: self.task.degrade_state() }),
        }
    }

    /// One resume bundle for `triggers`, written through the store's retention (plus the EMA /
    /// SWA exports) and reported in telemetry; `final_label` names a `Final` trigger's reason.
    pub(super) fn save(
        &mut self,
        model: &T::Model,
        triggers: &[Trigger],
        final_label: &str,
    ) -> Result<SaveReport, TrainError> {
        let saved = self.saved_state();
        let st = self.st;
        let metrics = self.tel.last_validation(st.step).cloned().unwrap_or_default();
        let identity = self.identity.clone();
        let meta = |kind| Meta {
            schema_version: SCHEMA_VERSION,
            kind,
            step: st.step,
            epoch: st.epoch,
            metrics: metric_map(&metrics),
            identity: identity.clone(),
            created_unix: now_unix(),
        };
        let state = serde_json::to_vec(&saved).map_err(|e| std::io::Error::other(format!("loop state: {e}")))?;
        let optimizer = Recorder::default()
            .record(self.optim.to_record(), ())
            .map_err(|e| std::io::Error::other(format!("optimizer state: {e}")))?;
        let (ema, swa) = (self.ema.as_ref().map(|e| &e.average), self.swa.as_ref().map(|w| &w.average));
        let report = self.store.save(
            st.step,
            triggers,
            || {
                let mut file = weights_file::<B, T::Model>(model, meta(Kind::Resume));
                file.blobs.insert(OPTIMIZER_BLOB.into(), optimizer);
                file.blobs.insert(STATE_BLOB.into(), state);
                for (prefix, average) in [(EMA_PREFIX, ema), (SWA_PREFIX, swa)] {
                    if let Some(average) = average {
                        let (tensors, _) = checkpoints::module::weights_of::<B::InnerBackend, _>(average);
                        file.tensors.extend(tensors.into_iter().map(|mut t| {
                            t.name = format!("{prefix}{}", t.name);
                            t
                        }));
                    }
                }
                file
            },
            || weights_file::<B, T::Model>(model, meta(Kind::Weights)),
        )?;
        let exports = [
            (EMA_EXPORT, self.ema.as_ref().map(|e| &e.average)),
            (SWA_EXPORT, self.swa.as_ref().filter(|w| w.updates > 0).map(|w| &w.average)),
        ];
        for (name, average) in exports {
            if let Some(average) = average {
                let (tensors, _) = checkpoints::module::weights_of::<B::InnerBackend, _>(average);
                let export = self.cfg.checkpoint_dir().join(name);
                CheckpointFile { meta: meta(Kind::Weights), tensors, blobs: BTreeMap::new(), extra: BTreeMap::new() }
                    .write(&export, || {})?;
            }
        }
        let reasons: Vec<&str> = triggers
            .iter()
            .map(|t| match t {
                Trigger::Validation { .. } => "validation",
                Trigger::StepInterval => "step_interval",
                Trigger::EpochEnd { .. } => "epoch_end",
                Trigger::Final => final_label,
            })
            .collect();
        self.tel.checkpoint(st.step, &reasons, &report.written, &report.removed)?;
        Ok(report)
    }
}
