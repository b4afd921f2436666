//! The keys of the controller's settings ConfigMap (`modekeeper-settings`), with their defaults:
//! what `install` writes and docs/controller.md documents (a test checks the docs). Pure data.

/// One key of the settings ConfigMap: the controller's default for workloads whose annotations do
/// not say otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// Every key of the settings ConfigMap, documented in docs/controller.md.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "apply",
        default: "false",
        doc: "true lets the controller apply its decisions (still through every gate); false proposes only (Events, no writes)",
    },
    Setting {
        key: "kill-switch",
        default: "off",
        doc: "cluster-wide kill switch, read before every apply: any value but off/0/false stops every apply",
    },
    Setting {
        key: "source",
        default: "k8s",
        doc: "telemetry source of a workload without the modekeeper.io/source annotation: k8s (pod logs) or prometheus",
    },
    Setting {
        key: "prometheus-url",
        default: "",
        doc: "base URL of the Prometheus HTTP API, for source prometheus",
    },
    Setting {
        key: "prometheus-selector",
        default: "namespace=\"$namespace\",pod=~\"$pods\"",
        doc: "label matchers of a workload's series ($namespace, $workload and $pods, a regex of exactly its pods' names, are filled in); a workload's modekeeper.io/prometheus-selector annotation adds matchers, never removes these",
    },
    Setting {
        key: "prometheus-lookback",
        default: "1h",
        doc: "how far back a new Prometheus session starts reading (never before the workload was created)",
    },
    Setting {
        key: "prometheus-config",
        default: "",
        doc: "JSON object of the --prom-config keys but url, start and end (step, lag, timeout, page_steps, node_labels, rank_label, queries); every query holds $selector",
    },
    Setting {
        key: "passport",
        default: "safe",
        doc: "passport of a workload without the modekeeper.io/passport annotation (a built-in template name)",
    },
    Setting {
        key: "policies",
        default: "safe-chords",
        doc: "chord policies of a workload without the modekeeper.io/policies annotation (comma-separated ids)",
    },
    Setting {
        key: "window-steps",
        default: "50",
        doc: "steps per analysis window",
    },
    Setting {
        key: "max-sessions",
        default: "1000",
        doc: "most workloads one replica runs sessions for at once; more wait for a free slot",
    },
];
