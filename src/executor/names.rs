//! The names of the files a run writes into `outputPath`: built by one
//! constructor ([`OutputFile::name`]) and recognised by its inverse
//! ([`OutputFile::parse`]), both from the same constants.

use crate::record::{
    CSV_HEADER_FILE, ERRORS_FILE_PREFIX, ERRORS_STATS_FILE_PREFIX, RESULTS_FILE_PREFIX,
    shard_file_name,
};

/// The base name of per-shard summaries.
pub const SUMMARY_FILE_PREFIX: &str = "prediction.summary";

/// What every output file name starts with: the prefix a run lists.
pub(super) const OUTPUT_FILE_PREFIX: &str = "prediction.";

/// A kind of file a run writes into `outputPath`.
///
/// ```
/// use batch_prediction::executor::OutputFile;
///
/// assert_eq!(OutputFile::Results.name(3, 10), "prediction.results-00003-of-00010");
/// assert_eq!(OutputFile::Summary.name(0, 1), "prediction.summary-00000-of-00001.json");
/// assert_eq!(
///     OutputFile::parse("prediction.errors_stats-00002-of-00004"),
///     Some((OutputFile::ErrorsStats, Some((2, 4))))
/// );
/// assert_eq!(OutputFile::parse("instances.jsonl"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutputFile {
    /// `prediction.results-SSSSS-of-NNNNN`: a shard's predictions, one JSON line each.
    Results,
    /// `prediction.results-SSSSS-of-NNNNN.csv`: a shard's predictions as CSV rows.
    CsvResults,
    /// `prediction.errors_stats-SSSSS-of-NNNNN`: a shard's errors counted by message.
    ErrorsStats,
    /// `prediction.errors-SSSSS-of-NNNNN`: a shard's failed instances, one JSON line each.
    Errors,
    /// `prediction.summary-SSSSS-of-NNNNN.json`: what a shard read and wrote; committed last.
    Summary,
    /// `prediction.results_header.csv`: the CSV column names, one file per job.
    CsvHeader,
}

impl OutputFile {
    /// Every kind.
    pub const ALL: [OutputFile; 6] = [
        OutputFile::Results,
        OutputFile::CsvResults,
        OutputFile::ErrorsStats,
        OutputFile::Errors,
        OutputFile::Summary,
        OutputFile::CsvHeader,
    ];

    /// The base name and the suffix after `-SSSSS-of-NNNNN`; `None` for the
    /// one file of a job that is not per shard.
    fn parts(self) -> Option<(&'static str, &'static str)> {
        match self {
            OutputFile::Results => Some((RESULTS_FILE_PREFIX, "")),
            OutputFile::CsvResults => Some((RESULTS_FILE_PREFIX, ".csv")),
            OutputFile::ErrorsStats => Some((ERRORS_STATS_FILE_PREFIX, "")),
            OutputFile::Errors => Some((ERRORS_FILE_PREFIX, "")),
            OutputFile::Summary => Some((SUMMARY_FILE_PREFIX, ".json")),
            OutputFile::CsvHeader => None,
        }
    }

    /// The file's name for shard `shard` of `count` (numbered from 0); the
    /// CSV header, one per job, ignores both.
    pub fn name(self, shard: usize, count: usize) -> String {
        match self.parts() {
            Some((prefix, suffix)) => format!("{}{suffix}", shard_file_name(prefix, shard, count)),
            None => CSV_HEADER_FILE.to_owned(),
        }
    }

    /// The kind of a file name a run writes, with its shard and shard count
    /// (`None` for the CSV header); `None` for any other name.
    pub fn parse(name: &str) -> Option<(OutputFile, Option<(usize, usize)>)> {
        Self::ALL.into_iter().find_map(|kind| match kind.parts() {
            None => (name == CSV_HEADER_FILE).then_some((kind, None)),
            Some((prefix, suffix)) => {
                let numbers = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                let (shard, count) = numbers.strip_prefix('-')?.split_once("-of-")?;
                Some((kind, Some((shard_number(shard)?, shard_number(count)?))))
            }
        })
    }
}

/// A shard number as names write it: five or more ASCII digits.
fn shard_number(digits: &str) -> Option<usize> {
    (digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// One name of each kind, for the check that no input pattern can match them.
pub(crate) fn sample_output_names() -> Vec<String> {
    OutputFile::ALL.iter().map(|kind| kind.name(0, 1)).collect()
}

/// Whether `name` is one of the files a run writes into `outputPath`.
pub(crate) fn is_output_file_name(name: &str) -> bool {
    OutputFile::parse(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_name_is_recognised_as_what_it_is() {
        for kind in OutputFile::ALL {
            for (shard, count) in [(0, 1), (3, 10), (99_999, 100_000), (123_456, 999_999)] {
                let name = kind.name(shard, count);
                let expected = (kind != OutputFile::CsvHeader).then_some((shard, count));
                assert_eq!(OutputFile::parse(&name), Some((kind, expected)), "{name}");
                assert!(name.starts_with(OUTPUT_FILE_PREFIX), "{name}");
            }
        }
    }

    #[test]
    fn other_names_are_not_output_files() {
        for name in [
            "prediction.results",
            "prediction.results-0000-of-00001",
            "prediction.results-00000-of-00001.json",
            "prediction.results-00000-of-00001.csv.bak",
            "prediction.errors_stats-00000-of-0000x",
            "prediction.summary-00000-of-00001",
            "prediction.results--00000-of-00001",
            "prediction.results-+0000-of-00001",
            "prediction.results_header.csv.tmp",
            "a.json",
        ] {
            assert_eq!(OutputFile::parse(name), None, "{name}");
        }
    }
}
