//! Property tests: round trips of generated valid jobs, state-machine
//! invariants over any sequence of moves, and validation of generated
//! invalid jobs.

use std::collections::BTreeSet;

use batch_prediction::{
    DataFormat, Etag, Job, ManualClock, ModelVersion, PredictionInput, PredictionOutput, State,
    Transition,
};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_]{0,40}"
}

fn project() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9-]{4,28}[a-z0-9]", "[0-9]{1,12}"]
}

fn label_key() -> impl Strategy<Value = String> {
    "[a-zß-öø-ÿ日本][a-z0-9_\\-ß-ö日本値]{0,20}"
}

fn label_value() -> impl Strategy<Value = String> {
    "[a-z0-9_\\-ß-ö日本値]{0,20}"
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // The whole range proto3 allows, 0001-01-01 to 9999-12-31, with nanoseconds.
    (-62_135_596_800i64..253_402_300_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
}

fn model() -> impl Strategy<Value = ModelVersion> {
    prop_oneof![
        (project(), id())
            .prop_map(|(p, m)| ModelVersion::model(&format!("projects/{p}/models/{m}")).unwrap()),
        (project(), id(), id()).prop_map(|(p, m, v)| {
            ModelVersion::version(&format!("projects/{p}/models/{m}/versions/{v}")).unwrap()
        }),
        "[a-z]{1,5}://[a-z/]{1,20}".prop_map(ModelVersion::uri),
    ]
}

/// Any JSON value, a few levels deep, with finite numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Unknown fields: names no known field has (they start with `x_`).
fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(("x_[a-z]{1,6}", json_value()), 0..3)
        .prop_map(|kv| kv.into_iter().collect())
}

fn input_format() -> impl Strategy<Value = DataFormat> {
    prop::sample::select(vec![
        DataFormat::Json,
        DataFormat::Text,
        DataFormat::TfRecord,
        DataFormat::TfRecordGzip,
    ])
}

fn output_format() -> impl Strategy<Value = Option<DataFormat>> {
    prop::option::of(prop::sample::select(vec![
        DataFormat::Json,
        DataFormat::Text,
        DataFormat::Csv,
    ]))
}

prop_compose! {
    fn prediction_input()(
        data_format in input_format(),
        output_data_format in output_format(),
        // Inputs and output in different trees: a pattern that can match
        // the job's own output files is refused (tests/integration/own_output.rs).
        input_paths in prop::collection::vec("in/[a-z0-9/*?.:_-]{1,27}", 1..4),
        output_path in "out/[a-z0-9/:._-]{1,26}",
        region in "[a-z]{2,6}-[a-z]{2,8}[0-9]",
        model in model(),
        runtime_version in prop::option::of("[0-9]\\.[0-9]{1,2}"),
        signature_name in prop::option::of("[a-z_]{1,16}"),
        batch_size in prop::option::of(1i64..=i64::MAX),
        max_worker_count in prop::option::of(1i64..=i64::MAX),
        unknown in unknown_fields(),
    ) -> PredictionInput {
        let mut input = PredictionInput::new(data_format, input_paths, output_path, region, model);
        input.output_data_format = output_data_format;
        input.runtime_version = runtime_version;
        input.signature_name = signature_name;
        input.batch_size = batch_size;
        input.max_worker_count = max_worker_count;
        input.unknown_fields = unknown;
        input
    }
}

prop_compose! {
    fn prediction_output()(
        path in prop::option::of("[a-z0-9/:]{1,20}"),
        predictions in prop::option::of(any::<i64>()),
        errors in prop::option::of(any::<i64>()),
        hours in prop::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
    ) -> PredictionOutput {
        let mut out = PredictionOutput::default();
        out.output_path = path;
        out.prediction_count = predictions;
        out.error_count = errors;
        out.node_hours = hours;
        out
    }
}

prop_compose! {
    fn valid_job()(
        job_id in id(),
        labels in prop::collection::btree_map(label_key(), label_value(), 0..6),
        input in prediction_input(),
        times in prop::collection::vec(prop::option::of(timestamp()), 3),
        state in prop::option::of(prop::sample::select(State::ALL.to_vec())),
        error_message in prop::option::of(".{0,20}"),
        etag in prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
        position in prop::option::of(any::<i64>()),
        output in prop::option::of(prediction_output()),
        unknown in unknown_fields(),
    ) -> Job {
        let mut job = Job::new(job_id, input).set_labels(labels);
        job.create_time = times[0];
        job.start_time = times[1];
        job.end_time = times[2];
        job.state = state;
        job.error_message = error_message;
        job.etag = etag.map(Etag::from_bytes);
        job.job_position = position;
        job.prediction_output = output;
        job.unknown_fields = unknown;
        job
    }
}

/// Ways to break a valid job, each with the field path it must be reported under.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    JobIdMissing,
    JobIdHyphen,
    LabelKeyUpper,
    LabelValueSpace,
    TooManyLabels,
    NoInputFormat,
    CsvInput,
    TfRecordOutput,
    NoInputPaths,
    NoOutputPath,
    NoRegion,
    NoModel,
    ZeroBatch,
    NegativeWorkers,
    LabelKeyTooLong,
    EmptyInputPath,
    SecondModelKey,
}

impl Breakage {
    const ALL: [Breakage; 17] = [
        Breakage::JobIdMissing,
        Breakage::JobIdHyphen,
        Breakage::LabelKeyUpper,
        Breakage::LabelValueSpace,
        Breakage::TooManyLabels,
        Breakage::NoInputFormat,
        Breakage::CsvInput,
        Breakage::TfRecordOutput,
        Breakage::NoInputPaths,
        Breakage::NoOutputPath,
        Breakage::NoRegion,
        Breakage::NoModel,
        Breakage::ZeroBatch,
        Breakage::NegativeWorkers,
        Breakage::LabelKeyTooLong,
        Breakage::EmptyInputPath,
        Breakage::SecondModelKey,
    ];

    /// Breaks `job`, returning the field paths that must be reported.
    fn apply(self, job: &mut Job) -> Vec<String> {
        let input = job.prediction_input.as_mut().unwrap();
        let field = |s: &str| vec![s.to_owned()];
        match self {
            Breakage::JobIdMissing => {
                job.job_id = None;
                field("jobId")
            }
            Breakage::JobIdHyphen => {
                job.job_id = Some("bad-id".into());
                field("jobId")
            }
            Breakage::LabelKeyUpper => {
                job.labels.insert("Upper".into(), "v".into());
                field("labels[\"Upper\"]")
            }
            Breakage::LabelValueSpace => {
                job.labels.insert("spacey".into(), "a b".into());
                field("labels[\"spacey\"]")
            }
            Breakage::TooManyLabels => {
                for i in 0..65 {
                    job.labels.insert(format!("many{i}"), String::new());
                }
                field("labels")
            }
            Breakage::NoInputFormat => {
                input.data_format = None;
                field("predictionInput.dataFormat")
            }
            Breakage::CsvInput => {
                input.data_format = Some(DataFormat::Csv);
                field("predictionInput.dataFormat")
            }
            Breakage::TfRecordOutput => {
                input.output_data_format = Some(DataFormat::TfRecord);
                field("predictionInput.outputDataFormat")
            }
            Breakage::NoInputPaths => {
                input.input_paths.clear();
                field("predictionInput.inputPaths")
            }
            Breakage::NoOutputPath => {
                input.output_path = None;
                field("predictionInput.outputPath")
            }
            Breakage::NoRegion => {
                input.region = Some(String::new());
                field("predictionInput.region")
            }
            Breakage::NoModel => {
                input.model = None;
                field("predictionInput")
            }
            Breakage::ZeroBatch => {
                input.batch_size = Some(0);
                field("predictionInput.batchSize")
            }
            Breakage::NegativeWorkers => {
                input.max_worker_count = Some(-7);
                field("predictionInput.maxWorkerCount")
            }
            Breakage::LabelKeyTooLong => {
                let key = "k".repeat(64);
                job.labels.insert(key.clone(), "v".into());
                field(&format!("labels[\"{key}\"]"))
            }
            Breakage::EmptyInputPath => {
                input.input_paths.push(String::new());
                field(&format!(
                    "predictionInput.inputPaths[{}]",
                    input.input_paths.len() - 1
                ))
            }
            Breakage::SecondModelKey => {
                // Only a request can carry two union keys: add one on the wire.
                let second = match input.model {
                    Some(ModelVersion::Uri(_)) => ("modelName", "projects/my-proj/models/m"),
                    _ => ("uri", "gs://second"),
                };
                let mut value = job.to_json();
                value["predictionInput"][second.0] = json!(second.1);
                *job = Job::from_value(value).unwrap();
                field("predictionInput")
            }
        }
    }
}

/// Breakages that do not touch the same field (so each is reported once).
fn breakages() -> impl Strategy<Value = Vec<Breakage>> {
    prop::sample::subsequence(Breakage::ALL.to_vec(), 1..=4).prop_filter(
        "one breakage per field",
        |b| {
            let count = |pred: fn(&Breakage) -> bool| b.iter().filter(|x| pred(x)).count();
            count(|x| matches!(x, Breakage::JobIdMissing | Breakage::JobIdHyphen)) <= 1
                && count(|x| matches!(x, Breakage::NoInputFormat | Breakage::CsvInput)) <= 1
                && count(|x| matches!(x, Breakage::NoModel | Breakage::SecondModelKey)) <= 1
                && count(|x| matches!(x, Breakage::NoInputPaths | Breakage::EmptyInputPath)) <= 1
        },
    )
}

fn transition() -> impl Strategy<Value = Transition> {
    prop_oneof![
        Just(Transition::Queue),
        Just(Transition::Prepare),
        Just(Transition::Run),
        Just(Transition::Succeed),
        ".{0,8}".prop_map(Transition::Fail),
        Just(Transition::RequestCancel),
        Just(Transition::cancel()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn serialize_then_parse_is_the_identity(job in valid_job()) {
        prop_assert_eq!(job.validate(), Ok(()));
        let text = serde_json::to_string(&job).unwrap();
        let back = Job::from_json(&text).unwrap();
        prop_assert_eq!(&back, &job);
        // And the JSON value is stable: writing the parsed job gives the same text.
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn no_sequence_of_moves_leaves_a_final_state(
        moves in prop::collection::vec(transition(), 0..24),
        steps in prop::collection::vec(0u64..5_000, 24),
    ) {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let mut job = Job::default();
        let mut reached_final = false;
        let mut was_queued = false;
        for (t, ms) in moves.into_iter().zip(steps) {
            let from = job.state();
            let before = job.clone();
            let target = t.target();
            match job.apply(t, &clock) {
                Ok(()) => {
                    prop_assert!(!reached_final, "moved out of a final state");
                    prop_assert!(from.can_transition_to(target));
                    prop_assert_eq!(job.state(), target);
                }
                Err(e) => {
                    prop_assert_eq!((e.from(), e.to()), (from, target));
                    prop_assert_eq!(&job, &before, "a refused move changed the job");
                }
            }
            reached_final |= job.state().is_terminal();
            // Invariants after every step.
            let s = job.state();
            prop_assert_eq!(job.end_time.is_some(), s.is_terminal());
            let has_message = job.error_message.as_deref().is_some_and(|m| !m.is_empty());
            prop_assert_eq!(has_message, matches!(s, State::Failed | State::Cancelled));
            was_queued |= s == State::Queued;
            prop_assert_eq!(job.create_time.is_some(), was_queued);
            let times: Vec<_> = [job.create_time, job.start_time, job.end_time].into_iter().flatten().collect();
            prop_assert!(times.windows(2).all(|w| w[0] <= w[1]), "{:?}", times);
            clock.advance(std::time::Duration::from_millis(ms));
        }
    }

    #[test]
    fn generated_invalid_jobs_are_rejected_at_the_right_fields(
        job in valid_job(),
        broken in breakages(),
    ) {
        let mut job = job;
        job.training_input = None;
        let mut expected = BTreeSet::new();
        for b in broken {
            expected.extend(b.apply(&mut job));
        }
        let err = job.validate().unwrap_err();
        let got: BTreeSet<String> = err.fields().map(str::to_owned).collect();
        prop_assert_eq!(got, expected);
        // Still a lossless round trip: validation and wire form are independent.
        prop_assert_eq!(Job::from_json(&serde_json::to_string(&job).unwrap()).unwrap(), job);
    }
}

/// Every record of a JSON or TEXT file, read whole or as byte ranges
/// (`RawReader` over `Storage::open_at`, as the executor's split shards
/// read): the same records, at the same bytes, each once.
mod byte_ranges {
    use std::sync::Arc;

    use batch_prediction::predict::CancelHandle;
    use batch_prediction::{
        BatchExecutor, DataFormat, EchoResolver, ExecutorConfig, InMemoryStorage, Job,
        ModelVersion, PredictionInput, State, SystemClock, Transition,
    };
    use proptest::prelude::*;
    use serde_json::Value;

    /// (predictions in order, damaged records as (byte, error)) of a run.
    fn run(
        storage: &InMemoryStorage,
        format: DataFormat,
        split: u64,
    ) -> (Vec<u8>, Vec<(u64, Value)>) {
        let out = format!("mem://out{split}");
        let mut job = Job::new(
            "ranges",
            PredictionInput::new(
                format,
                ["mem://in/f"],
                out.as_str(),
                "local",
                ModelVersion::uri("echo"),
            )
            .set_batch_size(3),
        );
        job.apply(Transition::Queue, &SystemClock).unwrap();
        let summary = BatchExecutor::new(Arc::new(storage.clone()), Arc::new(EchoResolver))
            .with_config(
                ExecutorConfig::default()
                    .with_split_bytes(split)
                    .with_max_threads(2),
            )
            .run(&mut job, &CancelHandle::new())
            .unwrap();
        assert_eq!(summary.state, State::Succeeded, "{:?}", job.error_message);
        crate::results_and_errors(storage, &out)
    }

    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{\"a\": 1}".to_owned()),
            Just("[1, 2]".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just(" ".to_owned()),
            Just("not json".to_owned()),
            Just("\"é\"".to_owned()),
            "[a-z0-9]{1,5}",
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_split_reads_every_record_once(text in text(), split in 1u64..64, text_format in any::<bool>()) {
            let format = if text_format { DataFormat::Text } else { DataFormat::Json };
            let storage = InMemoryStorage::new();
            storage.put("mem://in/f", text.clone());
            let whole = run(&storage, format, u64::MAX);
            let split = run(&storage, format, split);
            prop_assert_eq!(split, whole);
        }
    }
}

/// `RawReader::read_many` (whole records framed straight from the read
/// buffer, the executor's path) gives what `read_into` gives one record at
/// a time: the same records, positions and errors, whatever the number
/// asked for and however the source hands out its bytes.
mod read_many {
    use std::io::Cursor;

    use batch_prediction::DataFormat;
    use batch_prediction::record::{Position, RawReader, RawRecord, ReadOptions, TfRecordWriter};
    use batch_prediction::testing::ShortReads;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq)]
    enum Item {
        Record(Position, Vec<u8>),
        Error(String, Position, bool, Option<Vec<u8>>),
    }

    fn reader(format: DataFormat, data: &[u8], piece: usize, limit: usize) -> RawReader {
        let options = ReadOptions::default().with_max_record_bytes(limit);
        // Records straddle the end of what the reader has buffered.
        let source = ShortReads::new(Cursor::new(data.to_vec()), piece);
        RawReader::new(format, "f", Box::new(source), options).unwrap()
    }

    fn error(e: batch_prediction::record::RecordError) -> Item {
        Item::Error(e.to_string(), e.position, e.is_fatal(), e.raw)
    }

    fn one_by_one(mut r: RawReader) -> Vec<Item> {
        let mut items = Vec::new();
        let mut buf = Vec::new();
        while let Some(item) = r.read_into(&mut buf) {
            items.push(match item {
                Ok(position) => Item::Record(position, std::mem::take(&mut buf)),
                Err(e) => error(e),
            });
        }
        items
    }

    fn many(mut r: RawReader, max: usize) -> Vec<Item> {
        let mut items = Vec::new();
        let (mut buf, mut records) = (Vec::new(), Vec::<RawRecord>::new());
        while let Some(n) = r.read_many(&mut buf, &mut records, max) {
            match n {
                Ok(n) => {
                    assert!((1..=max).contains(&n), "{n} records for at most {max}");
                    assert_eq!(n, records.len());
                    items.extend(
                        records
                            .drain(..)
                            .map(|rec| Item::Record(rec.position, buf[rec.range].to_vec())),
                    );
                    buf.clear();
                }
                Err(e) => {
                    assert!(records.is_empty());
                    items.push(error(e));
                }
            }
        }
        items
    }

    fn lines() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just("{\"a\": 1}".to_owned()),
            Just("\n".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\r".to_owned()),
            Just(" ".to_owned()),
            Just("not json".to_owned()),
            Just("a line longer than most limits".to_owned()),
            "[a-z0-9]{1,5}",
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat().into_bytes())
    }

    /// TFRecord frames of random data, perhaps with one byte flipped and
    /// the end cut off.
    fn frames() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..30),
            proptest::option::of((any::<usize>(), 1u8..)),
            proptest::option::of(any::<usize>()),
        )
            .prop_map(|(records, flip, cut)| {
                let mut w = TfRecordWriter::new(Vec::new());
                for r in &records {
                    w.write(r).unwrap();
                }
                let mut file = w.into_inner();
                if let Some((at, bits)) = flip.filter(|_| !file.is_empty()) {
                    let at = at % file.len();
                    file[at] ^= bits;
                }
                if let Some(cut) = cut.filter(|_| !file.is_empty()) {
                    file.truncate(cut % file.len());
                }
                file
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn lines_read_many_is_read_into(
            data in lines(),
            piece in 1usize..100,
            max in 1usize..8,
            limit in 4usize..40,
            text in any::<bool>(),
        ) {
            let format = if text { DataFormat::Text } else { DataFormat::Json };
            let want = one_by_one(reader(format, &data, piece, limit));
            prop_assert_eq!(many(reader(format, &data, piece, limit), max), want);
        }

        #[test]
        fn tfrecord_read_many_is_read_into(
            data in frames(),
            piece in 1usize..300,
            max in 1usize..12,
            limit in 8usize..96,
        ) {
            let want = one_by_one(reader(DataFormat::TfRecord, &data, piece, limit));
            prop_assert_eq!(many(reader(DataFormat::TfRecord, &data, piece, limit), max), want);
        }
    }
}
