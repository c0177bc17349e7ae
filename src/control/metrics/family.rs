//! Building Prometheus metric families from values read at scrape time:
//! the custom collectors read the cores' atomics and hand the numbers to a
//! [`Family`], which turns them into the `prometheus` crate's data model
//! for its text encoder.

use prometheus::core::Desc;
use prometheus::proto::{self, MetricFamily, MetricType};

use super::names::{Def, Kind};

/// The descriptor a collector announces for `def`.
pub fn desc(def: &Def) -> Desc {
    Desc::new(
        def.name.to_owned(),
        def.help.to_owned(),
        def.labels.iter().map(|l| (*l).to_owned()).collect(),
        Default::default(),
    )
    .unwrap_or_else(|e| panic!("metric definition {}: {e}", def.name))
}

/// One metric family being filled in.
pub struct Family {
    def: Def,
    family: MetricFamily,
}

impl Family {
    /// An empty family for `def`.
    pub fn new(def: Def) -> Self {
        let mut family = MetricFamily::default();
        family.set_name(def.name.to_owned());
        family.set_help(def.help.to_owned());
        family.set_field_type(match def.kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
            Kind::Histogram => MetricType::HISTOGRAM,
        });
        Self { def, family }
    }

    fn metric(&self, values: &[&str]) -> proto::Metric {
        debug_assert_eq!(values.len(), self.def.labels.len(), "{}", self.def.name);
        let labels = self
            .def
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| {
                let mut pair = proto::LabelPair::default();
                pair.set_name((*name).to_owned());
                pair.set_value((*value).to_owned());
                pair
            })
            .collect();
        proto::Metric::from_label(labels)
    }

    /// Adds a series with label values `values` (in the order of the
    /// definition's labels) and value `value`.
    pub fn add(&mut self, values: &[&str], value: f64) -> &mut Self {
        let mut m = self.metric(values);
        match self.def.kind {
            Kind::Counter => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
            Kind::Histogram => unreachable!("{}: use add_histogram", self.def.name),
        }
        self.family.mut_metric().push(m);
        self
    }

    /// Adds a histogram series: cumulative `(upper bound, count)` buckets
    /// (without `+Inf`, which is `count`), the count and the sum.
    pub fn add_histogram(
        &mut self,
        values: &[&str],
        buckets: &[(f64, u64)],
        count: u64,
        sum: f64,
    ) -> &mut Self {
        debug_assert_eq!(self.def.kind, Kind::Histogram, "{}", self.def.name);
        let mut m = self.metric(values);
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            buckets
                .iter()
                .map(|&(bound, n)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        m.set_histogram(h);
        self.family.mut_metric().push(m);
        self
    }

    /// The finished family.
    pub fn finish(self) -> MetricFamily {
        self.family
    }
}
