//! The API's wire types: [`Job`], [`PredictionInput`], [`PredictionOutput`],
//! [`DataFormat`], [`State`], [`ModelVersion`] and [`Etag`].

mod job;
mod prediction;
pub(crate) mod wire;

pub use job::{Etag, InvalidEtag, Job, State};
pub use prediction::{
    DataFormat, ModelVersion, PredictionInput, PredictionOutput, UnknownEnumValue,
};
