//! The API's wire types: [`Job`], [`PredictionInput`], [`PredictionOutput`],
//! [`DataFormat`], [`State`], [`ModelVersion`] and [`Etag`]; the models and
//! versions a job can name ([`Model`], [`Version`]).

mod job;
mod prediction;
mod resource;
pub(crate) mod wire;

pub use job::{Etag, InvalidEtag, Job, State};
pub use prediction::{
    DataFormat, ModelVersion, PredictionInput, PredictionOutput, UnknownEnumValue,
};
pub use resource::{Model, Version};
