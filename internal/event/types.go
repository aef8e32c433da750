// Package event owns Cairn's event vocabulary: the event types, the strict client form of an event and its
// validation, and the canonical encodings of the leaf entry and the envelope that the log commits to.
//
// It never sees key material and never writes anything: personal content stays in the opaque payload bytes,
// which the caller seals before anything touches disk.
package event

import (
	"slices"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/cairn-ai/cairn/internal/signature"
)

// SchemaVersion is the version of the leaf and envelope encodings ("v" in both).
const SchemaVersion = 1

// Retention classes. Every event type belongs to exactly one; period keys are kept per class.
const (
	ClassLog = "log" // automatically generated logs: Art. 12, kept at least six months (Art. 19, 26(6))
	ClassDoc = "doc" // documentation and lifecycle records: Art. 18, kept ten years
)

// Kind is the JSON kind an attribute must have.
type Kind int

const (
	KindString Kind = iota
	KindNumber
	KindBool
	KindStrings     // array of strings
	KindNumberMap   // object of numbers (metrics)
	KindStringMap   // object of strings (digests, parameters)
	KindObject      // any object of non-personal facts (a system definition)
	KindTimestamp   // RFC 3339 string
	KindNonNegative // number >= 0
	KindDigest      // "sha256:<64 lowercase hex>"
)

// Attr describes one allowed attribute of an event type.
type Attr struct {
	Kind Kind
	Enum []string // allowed values, for KindString
	// Required is set from the type's Require and RequireOneOf lists, so validation records only those.
	Required bool
}

// Spec describes one event type: its retention class, what it requires and which attributes it allows.
// Attributes are non-personal facts stored in clear in the envelope, so they are allow-listed: anything personal
// belongs in the sealed payload.
type Spec struct {
	Class string
	// ServerOnly types are appended by Cairn itself (system definitions, access records); clients cannot send them.
	ServerOnly bool
	// NeedModel requires model.name and model.version.
	NeedModel bool
	// NeedDeployment requires the deployment (environment) field.
	NeedDeployment bool
	// NeedRefs requires at least one reference to another event.
	NeedRefs bool
	// Require lists attributes that must be present.
	Require []string
	// RequireOneOf lists alternatives of which at least one must be present; "payload.output" names a payload member.
	RequireOneOf []string
	Attrs        map[string]Attr
	// Check validates what the per-attribute kinds cannot (one field against another); nil when there is
	// nothing more to check. It returns the offending field as a JSON Pointer and the reason.
	Check func(ev *Event) (field, reason string)
}

// RuleViolations is the attribute in which Cairn marks an event that breaks a lifecycle rule of its system
// (docs/lifecycle.md). Only the sequencer sets it; a client that sends it is refused.
const RuleViolations = "rule_violations"

var common = map[string]Attr{
	"request_id":      {Kind: KindString},
	"session_id":      {Kind: KindString},
	"member_state":    {Kind: KindString},
	"deployer":        {Kind: KindString},
	"system_version":  {Kind: KindString},
	"log_controller":  {Kind: KindString, Enum: []string{"provider", "deployer", "joint"}},
	"clock_source":    {Kind: KindString},
	"data_classes":    {Kind: KindStrings},
	"rule_violations": {Kind: KindStrings},
}

func attrs(m map[string]Attr) map[string]Attr {
	out := make(map[string]Attr, len(m)+len(common))
	for k, v := range common {
		out[k] = v
	}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Specs holds every event type of schema v1 (DESIGN.md, "Event types").
var Specs = map[string]*Spec{
	"system.registered": {Class: ClassDoc, ServerOnly: true, Attrs: attrs(nil)},
	"system.updated":    {Class: ClassDoc, ServerOnly: true, Attrs: attrs(nil)},
	"dataset.version": {Class: ClassDoc, Require: []string{"name", "version"}, Check: checkDataset, Attrs: attrs(map[string]Attr{
		"name": {Kind: KindString}, "version": {Kind: KindString},
		// digest is Cairn's identity for the content, when Cairn or the client could read it.
		"digest": {Kind: KindDigest}, "digest_unknown": {Kind: KindString},
		"uri": {Kind: KindString}, "source_type": {Kind: KindString}, "rows": {Kind: KindNonNegative},
		"dvc_md5": {Kind: KindString}, "dvc_path": {Kind: KindString}, "git_repo": {Kind: KindString},
		"git_revision": {Kind: KindString}, "mlflow_digest": {Kind: KindString}, "mlflow_context": {Kind: KindString},
		"schema_digest": {Kind: KindDigest}, "statistics": {Kind: KindNumberMap}, "source": {Kind: KindString},
	})},
	"training.run": {Class: ClassDoc, Require: []string{"run_id"}, Check: checkRun, Attrs: attrs(map[string]Attr{
		"run_id": {Kind: KindString}, "params": {Kind: KindStringMap}, "metrics": {Kind: KindNumberMap},
		"code_revision": {Kind: KindString}, "environment_digest": {Kind: KindString},
		"datasets": {Kind: KindStrings}, "experiment": {Kind: KindString}, "source": {Kind: KindString},
		"started": {Kind: KindTimestamp}, "ended": {Kind: KindTimestamp},
		"status": {Kind: KindString, Enum: []string{"running", "scheduled", "finished", "failed", "killed", "deleted"}},
	})},
	"model.version": {Class: ClassDoc, NeedModel: true, Check: checkModelVersion, Attrs: attrs(map[string]Attr{
		"format": {Kind: KindString}, "run_id": {Kind: KindString}, "modelkit_digest": {Kind: KindDigest},
		"artefact_digests": {Kind: KindStringMap}, "digest_unknown": {Kind: KindString},
		"datasets": {Kind: KindStrings}, "from_version": {Kind: KindString}, "source": {Kind: KindString},
		"status": {Kind: KindString},
		// An alias (MLflow's "@champion") pointing at the version was set or removed: a registry pointer moved.
		"alias": {Kind: KindString}, "alias_action": {Kind: KindString, Enum: []string{"set", "removed"}},
		"change_classification": {Kind: KindString, Enum: []string{"predetermined", "non_substantial", "substantial", "intended_purpose_change"}},
	})},
	"evaluation": {Class: ClassDoc, NeedModel: true, Require: []string{"metrics", "passed"}, Attrs: attrs(map[string]Attr{
		"metrics": {Kind: KindNumberMap}, "thresholds": {Kind: KindNumberMap}, "dataset": {Kind: KindString},
		// group_metrics holds metrics per group (fairness): {"group": {"metric": number}}.
		"group_metrics": {Kind: KindObject},
		"passed":        {Kind: KindBool},
	})},
	"approval": {Class: ClassDoc, NeedModel: true, NeedRefs: true, Require: []string{"decision"}, Check: checkApproval, Attrs: attrs(map[string]Attr{
		"decision": {Kind: KindString, Enum: []string{"approve", "reject"}},
		"scope":    {Kind: KindString},
		// The justification is free text and goes in the payload; its digest may be kept in clear.
		"justification_digest": {Kind: KindDigest},
		// The approver's own signature over the digest of the document approved (an evaluation report, say):
		// docs/documents.md, "Signatures".
		"signed_digest":    {Kind: KindDigest},
		"signature":        {Kind: KindString},
		"signature_format": {Kind: KindString, Enum: []string{"ssh", "ed25519"}},
		"signer_key":       {Kind: KindString},
	})},
	"deployment": {Class: ClassDoc, NeedModel: true, NeedDeployment: true, Require: []string{"action"}, Attrs: attrs(map[string]Attr{
		"action":          {Kind: KindString, Enum: []string{"deployed", "retired", "rolled_back"}},
		"config_digest":   {Kind: KindString},
		"data_version":    {Kind: KindString},
		"environment":     {Kind: KindString},
		"ifu_version":     {Kind: KindString},
		"member_states":   {Kind: KindStrings},
		"logging_profile": {Kind: KindString},
	})},
	"inference": {Class: ClassLog, NeedModel: true, RequireOneOf: []string{"payload.output", "error_code", "part"}, Attrs: attrs(map[string]Attr{
		"confidence":            {Kind: KindNumber},
		"latency_ms":            {Kind: KindNonNegative},
		"ttfb_ms":               {Kind: KindNonNegative},
		"config_digest":         {Kind: KindString},
		"ifu_version":           {Kind: KindString},
		"input_digest":          {Kind: KindString},
		"input_spec_check":      {Kind: KindString},
		"input_source":          {Kind: KindString},
		"human_review_required": {Kind: KindBool},
		"anomaly_flags":         {Kind: KindStrings},
		"thresholds":            {Kind: KindNumberMap},
		"risk_score":            {Kind: KindNumber},
		"purpose_code":          {Kind: KindString},
		"error_code":            {Kind: KindString},
		"status":                {Kind: KindNumber},
		"protocol":              {Kind: KindString},
		"traceparent":           {Kind: KindString},
		"served_model":          {Kind: KindString},
		// Recorded by the capture proxy and the SDKs (docs/capture.md).
		"served_version":    {Kind: KindString},
		"requested_model":   {Kind: KindString},
		"requested_version": {Kind: KindString},
		"outcome":           {Kind: KindString, Enum: []string{"ok", "error_client", "error_server", "error_in_stream", "upstream_unreachable", "client_cancelled", "withheld", "refused", "capture_rejected"}},
		"usage":             {Kind: KindNumberMap},
		// part splits a streamed call: "request" is recorded before the upstream is called and needs no output;
		// "completion" refers to it and holds the output.
		"part": {Kind: KindString, Enum: []string{"request", "completion"}},
	})},
	"oversight": {Class: ClassLog, NeedRefs: true, Require: []string{"action"}, Attrs: attrs(map[string]Attr{
		"action":        {Kind: KindString, Enum: []string{"viewed", "confirmed", "overridden", "escalated", "stopped", "verified", "rejected", "reversed", "disregarded", "flagged_anomaly"}},
		"overseer_role": {Kind: KindString}, "started": {Kind: KindTimestamp}, "ended": {Kind: KindTimestamp},
		"verification_sequence":        {Kind: KindNumber},
		"stop_outcome":                 {Kind: KindString, Enum: []string{"safe_state_reached", "failed"}},
		"automation_bias_notice_shown": {Kind: KindBool}, "ui_version": {Kind: KindString},
		"measure_origin": {Kind: KindString, Enum: []string{"built_in", "deployer_implemented"}},
	})},
	"anomaly": {Class: ClassLog, Require: []string{"kind"}, Attrs: attrs(map[string]Attr{
		"kind": {Kind: KindString}, "severity": {Kind: KindString, Enum: []string{"info", "warning", "critical"}},
		"metric": {Kind: KindString}, "value": {Kind: KindNumber}, "threshold": {Kind: KindNumber},
	})},
	"incident": {Class: ClassDoc, Require: []string{"incident_id"}, Attrs: attrs(map[string]Attr{
		"incident_id": {Kind: KindString}, "detected_by": {Kind: KindString, Enum: []string{"provider", "deployer", "user", "authority"}},
		"harm_category": {Kind: KindString}, "awareness": {Kind: KindTimestamp}, "report_deadline": {Kind: KindTimestamp},
		"member_states": {Kind: KindStrings}, "status": {Kind: KindString},
	})},
	"document": {Class: ClassDoc, Require: []string{"kind", "digest"}, Check: checkDocument, Attrs: attrs(map[string]Attr{
		"kind": {Kind: KindString}, "digest": {Kind: KindString}, "format": {Kind: KindString},
		"at": {Kind: KindTimestamp}, "checkpoint_size": {Kind: KindNonNegative},
		// period_from and period_to bound a monitoring summary; subject is the event a reconstruction is about.
		"period_from": {Kind: KindTimestamp}, "period_to": {Kind: KindTimestamp}, "subject": {Kind: KindString},
		// A signature over the document digest (docs/documents.md): the signature, its format and the signer's
		// public key, so that cairn verify can check it from the log alone.
		"signature":          {Kind: KindString},
		"signature_format":   {Kind: KindString, Enum: []string{"ssh", "ed25519"}},
		"signer_key":         {Kind: KindString},
		"signer_fingerprint": {Kind: KindString},
	})},
	"access": {Class: ClassLog, Require: []string{"action"}, Attrs: attrs(map[string]Attr{
		"action": {Kind: KindString, Enum: []string{"read", "export", "reidentify", "reidentify_request", "reidentify_approve", "query"}},
		"scope":  {Kind: KindString}, "legal_basis": {Kind: KindString}, "accessor_org": {Kind: KindString},
		"export_format": {Kind: KindString},
	})},
	// retention records archival, destruction and legal holds; only Cairn appends it (package retention), so a
	// "destroyed" record that lets verification accept missing envelopes cannot come from a client.
	"retention": {Class: ClassDoc, ServerOnly: true, Require: []string{"action"}, Attrs: attrs(map[string]Attr{
		"action": {Kind: KindString, Enum: []string{"archived", "destroyed", "hold", "release"}},
		"class":  {Kind: KindString}, "month": {Kind: KindString}, "key_id": {Kind: KindString},
		"count": {Kind: KindNonNegative}, "range_digest": {Kind: KindString},
		"first_index": {Kind: KindNonNegative}, "last_index": {Kind: KindNonNegative},
		"hold_id": {Kind: KindString}, "from": {Kind: KindTimestamp}, "to": {Kind: KindTimestamp},
		"types": {Kind: KindStrings}, "reason_ref": {Kind: KindString}, "archive": {Kind: KindString},
	})},
	"notice": {Class: ClassLog, Require: []string{"notice_type"}, Attrs: attrs(map[string]Attr{
		"notice_type": {Kind: KindString}, "notice_version": {Kind: KindString}, "audience": {Kind: KindString},
		"channel": {Kind: KindString},
	})},
	"biometric.use": {Class: ClassLog, Require: []string{"use_start", "reference_db"}, Attrs: attrs(map[string]Attr{
		"use_start": {Kind: KindTimestamp}, "use_end": {Kind: KindTimestamp}, "reference_db": {Kind: KindString},
		"reference_db_version": {Kind: KindString}, "matches": {Kind: KindNonNegative},
		"exemption_basis": {Kind: KindString},
	})},
	// admin records administration of the instance (tokens, keys) in the "_admin" log.
	"admin": {Class: ClassDoc, ServerOnly: true, Require: []string{"action"}, Attrs: attrs(map[string]Attr{
		"action": {Kind: KindString, Enum: []string{"token_created", "token_revoked", "vault_erased", "kek_rotated",
			"signing_key_rotated"}},
		"token_id": {Kind: KindString}, "roles": {Kind: KindStrings}, "systems": {Kind: KindStrings},
		"domain": {Kind: KindString}, "kek_id": {Kind: KindString}, "count": {Kind: KindNonNegative},
		"vkey": {Kind: KindString}, "record_id": {Kind: KindString},
		"expires": {Kind: KindTimestamp},
	})},
	"gate": {Class: ClassDoc, Require: []string{"result"}, Attrs: attrs(map[string]Attr{
		"result": {Kind: KindString, Enum: []string{"pass", "fail"}}, "policy_digest": {Kind: KindString},
		"rules": {Kind: KindNumber}, "failed": {Kind: KindNumber}, "failed_rules": {Kind: KindStrings},
		"checkpoint_size": {Kind: KindNonNegative},
	})},
}

func init() {
	for _, sp := range Specs {
		for _, names := range [][]string{sp.Require, sp.RequireOneOf} {
			for _, n := range names {
				if a, ok := sp.Attrs[n]; ok {
					a.Required = true
					sp.Attrs[n] = a
				}
			}
		}
	}
}

// Types returns every event type name, sorted.
func Types() []string {
	out := make([]string, 0, len(Specs))
	for k := range Specs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Lifecycle reports whether typ is a lifecycle event type: the types whose references and approvals the
// lifecycle rules check (docs/lifecycle.md).
func Lifecycle(typ string) bool {
	switch typ {
	case "dataset.version", "training.run", "model.version", "evaluation", "approval", "deployment":
		return true
	}
	return false
}

func checkDataset(ev *Event) (string, string) {
	for _, n := range []string{"digest", "dvc_md5", "mlflow_digest", "uri"} {
		if hasMember(ev.Attrs, n) {
			return "", ""
		}
	}
	return "/attrs/digest", "missing: a dataset version needs an identity: digest (SHA-256 of the content), dvc_md5, mlflow_digest or uri"
}

func checkDocument(ev *Event) (string, string) { return checkSignature(ev, "digest") }

func checkApproval(ev *Event) (string, string) { return checkSignature(ev, "signed_digest") }

// checkSignature checks a detached signature an event carries over the digest in its attribute digestAttr: the
// signature, its format and the signer key go together, and must verify.
func checkSignature(ev *Event, digestAttr string) (string, string) {
	sig, key, format := hasMember(ev.Attrs, "signature"), hasMember(ev.Attrs, "signer_key"), hasMember(ev.Attrs, "signature_format")
	if sig != key || sig != format || (sig && !hasMember(ev.Attrs, digestAttr)) {
		return "/attrs/signature", "signature, signature_format, signer_key and " + digestAttr + " go together"
	}
	if !sig {
		return "", ""
	}
	str := func(name string) string {
		v, _ := Member(ev.Attrs, name)
		var s string
		json.Unmarshal(v, &s)
		return s
	}
	if _, err := signature.Verify(str("signature_format"), str("signature"), str("signer_key"), str(digestAttr)); err != nil {
		return "/attrs/signature", "does not verify over " + digestAttr + " with signer_key: " + err.Error()
	}
	return "", ""
}

func checkRun(ev *Event) (string, string) {
	s, ok1 := Member(ev.Attrs, "started")
	e, ok2 := Member(ev.Attrs, "ended")
	if ok1 && ok2 {
		ts, _ := time.Parse(time.RFC3339Nano, unq(s))
		te, _ := time.Parse(time.RFC3339Nano, unq(e))
		if te.Before(ts) {
			return "/attrs/ended", "before started"
		}
	}
	return "", ""
}

func checkModelVersion(ev *Event) (string, string) {
	if hasMember(ev.Attrs, "alias") != hasMember(ev.Attrs, "alias_action") {
		return "/attrs/alias_action", "alias and alias_action go together"
	}
	// The artefact digest is optional (a version may be recorded before its artefact is reachable; say why in
	// attrs.digest_unknown), and checked when present.
	if ev.Model.Digest != "" {
		if _, err := ParseSHA256(ev.Model.Digest); err != nil {
			return "/model/digest", "must be sha256:<64 hex>"
		}
	}
	return "", ""
}

// unq returns the text of a canonical JSON string without escapes (timestamps have none).
func unq(b []byte) string {
	if len(b) >= 2 {
		return string(b[1 : len(b)-1])
	}
	return ""
}
