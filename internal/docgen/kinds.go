package docgen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-ai/cairn/internal/event"
	"github.com/cairn-ai/cairn/internal/fairness"
	"github.com/cairn-ai/cairn/internal/lifecycle"
	"github.com/cairn-ai/cairn/internal/signature"
)

func (b *builder) summary(title string) {
	d, def := b.d, b.def()
	d.Title = title
	d.Summary = []Item{
		fact("System", def.def.Name+" ("+d.System+")", def.cite()),
		fact("Provider", def.def.Provider, def.cite()),
		fact("Log state", "the "+strconv.FormatUint(b.s.size, 10)+" events recorded at or before "+d.At+"; the checkpoint at the end covers exactly these"),
	}
	if b.s.destroyed > 0 {
		d.Summary = append(d.Summary, fact("Retention", strconv.FormatUint(b.s.destroyed, 10)+" of these events' envelopes were destroyed by retention; what they said is not in this document"))
	}
	if d.ModelVersion != "" {
		var cs []Cite
		if reg := b.s.registration(d.model); reg != nil {
			cs = append(cs, reg.cite())
		}
		d.Summary = append(d.Summary, fact("Model version", d.ModelVersion, cs...))
	}
}

// modelCard: what the model is, what it was built from, how it performed, who approved it, where it runs.
func (b *builder) modelCard() {
	v := b.d.model
	b.summary("Model card: " + orNone(b.d.ModelVersion))
	def := b.def()
	sec := []Section{b.section("1", "Model details", b.versionItems()...)}
	intended := []Item{fact("Intended purpose", def.def.IntendedPurpose, def.cite())}
	if def.def.AnnexIII != "" {
		intended = append(intended, fact("Annex III category", def.def.AnnexIII, def.cite()))
	}
	if def.def.Deployer != "" {
		intended = append(intended, fact("Deployer", def.def.Deployer, def.cite()))
	}
	sec = append(sec, b.section("2", "Intended use", intended...))
	if r := b.run(v); r != nil {
		sec = append(sec, b.section("3", "Training", runItems(r)...))
	} else {
		sec = append(sec, b.section("3", "Training", gap("Training run", "no training run is linked to this version", "a training.run event referenced by the model.version event (or with its run_id)")))
	}
	sec = append(sec, b.datasetSection("4", "Training data", v))
	evs := b.s.forVersion("evaluation", v)
	ev := b.section("5", "Evaluation")
	if len(evs) == 0 {
		ev.Items = []Item{gap("Evaluation", "no evaluation of this version", "an evaluation event for "+orNone(b.d.ModelVersion))}
	} else {
		ev.Tables = []Table{evaluationTable(evs)}
	}
	sec = append(sec, ev)
	sec = append(sec, b.fairnessSection("6", evs))
	ad := b.section("7", "Approvals and deployments")
	aps, deps := b.s.forVersion("approval", v), b.s.forVersion("deployment", v)
	if len(aps) == 0 {
		ad.Items = append(ad.Items, gap("Approval", "no approval of this version", "an approval event referencing a passed evaluation, by someone other than the registrant"))
	} else {
		ad.Tables = append(ad.Tables, approvalTable(aps))
	}
	if len(deps) == 0 {
		ad.Items = append(ad.Items, fact("Deployments", "none recorded"))
	} else {
		ad.Tables = append(ad.Tables, deploymentTable(deps))
	}
	sec = append(sec, ad)
	use := b.section("8", "Use in operation")
	if sp := b.s.inferences[v]; sp != nil {
		use.Items = []Item{fact("Inferences recorded", strconv.FormatUint(sp.count, 10)+" by this version in the log state above (first and last cited)", sp.first.cite(), sp.last.cite())}
	} else {
		use.Items = []Item{fact("Inferences recorded", "none")}
	}
	sec = append(sec, use)
	sec = append(sec, b.section("9", "Limitations and risks",
		b.provided("Limitations and foreseeable risks", b.info().AnnexIV, "annex_iv", "3", "known limitations and foreseeable risks of the system")))
	b.d.Sections = sec
}

func (b *builder) datasetSection(number, heading string, v lifecycle.Version) Section {
	sec := b.section(number, heading)
	ds := b.datasets(v)
	if len(ds) == 0 {
		sec.Items = []Item{gap("Datasets", "no dataset version is linked to this model version", "dataset.version events referenced by the training run or the model.version event")}
		return sec
	}
	t := Table{Caption: "Dataset versions", Columns: []string{"dataset", "rows", "origin", "recorded by"}}
	for _, d := range ds {
		rows := "not recorded"
		if r, ok := d.num("rows"); ok {
			rows = num(r)
		}
		t.Rows = append(t.Rows, Row{Cells: []string{datasetIdentity(d), rows, orNone(d.str("source_type")), d.Actor}, Cites: []Cite{d.cite()}})
	}
	sec.Tables = []Table{t}
	return sec
}

func (b *builder) fairnessSection(number string, evs []*node) Section {
	sec := b.section(number, "Fairness")
	for i := len(evs) - 1; i >= 0; i-- {
		if len(evs[i].groups()) > 0 {
			sec.Items = []Item{fact("Evaluation", "the latest evaluation with per-group figures, "+stamp(evs[i].Time), evs[i].cite())}
			sec.Tables = fairnessTables(evs[i], fairness.DefaultMinGroup)
			return sec
		}
	}
	sec.Items = []Item{gap("Per-group figures", "no evaluation of this version records group_metrics", "an evaluation event with attrs.group_metrics {\"attribute=value\": {\"n\", \"selection_rate\", \"tpr\"}}")}
	return sec
}

// evaluationReport: every evaluation of the version, overall and per group, with thresholds and verdicts.
func (b *builder) evaluationReport() {
	v := b.d.model
	b.summary("Evaluation report: " + orNone(b.d.ModelVersion))
	sec := []Section{b.section("1", "Model under evaluation", b.versionItems()...)}
	evs := b.s.forVersion("evaluation", v)
	all := b.section("2", "Evaluations")
	if len(evs) == 0 {
		all.Items = []Item{gap("Evaluation", "no evaluation of this version", "an evaluation event for "+orNone(b.d.ModelVersion))}
	}
	for i, e := range evs {
		passed, _ := e.bool("passed")
		s := b.section("2."+strconv.Itoa(i+1), "Evaluation of "+stamp(e.Time),
			fact("Evaluated by", e.Actor, e.cite()),
			fact("Dataset", orNone(e.str("dataset")), e.cite()),
			fact("Recorded verdict", passFail(passed), e.cite()))
		rows, ok := metricRows(e)
		s.Tables = append(s.Tables, Table{Caption: "Metrics against thresholds (a threshold named m is a minimum, m_max a maximum)",
			Columns: []string{"metric", "value", "threshold", "result"}, Rows: rows})
		s.Items = append(s.Items, fact("Thresholds", passFail(ok)+" on every metric with a threshold", e.cite()))
		if ft := fairnessTables(e, fairness.DefaultMinGroup); ft != nil {
			s.Tables = append(s.Tables, ft...)
		} else {
			s.Items = append(s.Items, gap("Per-group figures", "this evaluation records no group_metrics", "attrs.group_metrics in the evaluation event"))
		}
		if len(e.Violations) > 0 {
			s.Items = append(s.Items, fact("Lifecycle rules broken", strings.Join(e.Violations, ", "), e.cite()))
		}
		all.Sections = append(all.Sections, s)
	}
	sec = append(sec, all)
	ap := b.section("3", "Approvals resting on these evaluations")
	var aps []*node
	for _, a := range b.s.forVersion("approval", v) {
		if slices.ContainsFunc(evs, func(e *node) bool { return slices.Contains(a.Refs, e.ID) }) {
			aps = append(aps, a)
		}
	}
	if len(aps) == 0 {
		ap.Items = []Item{gap("Approval", "no approval references these evaluations", "an approval event whose refs name an evaluation of this version")}
	} else {
		ap.Tables = []Table{approvalTable(aps)}
	}
	sec = append(sec, ap)
	b.d.Sections = sec
}

// datasheet: every dataset version behind the model version (or every one recorded, without a version).
func (b *builder) datasheet() {
	v := b.d.model
	b.summary("Datasheet: " + orNone(b.d.ModelVersion))
	ds := b.datasets(v)
	scope := "the dataset versions behind " + b.d.ModelVersion
	if v == (lifecycle.Version{}) || len(ds) == 0 {
		ds = b.s.of("dataset.version", nil)
		scope = "every dataset version recorded"
	}
	sec := []Section{b.section("1", "Scope", fact("Covers", scope+": "+strconv.Itoa(len(ds)), cites(ds)...))}
	all := b.section("2", "Dataset versions")
	if len(ds) == 0 {
		all.Items = []Item{gap("Dataset", "no dataset version is recorded", "a dataset.version event")}
	}
	for i, d := range ds {
		s := b.section("2."+strconv.Itoa(i+1), d.str("name")+"@"+d.str("version"),
			fact("Identity", datasetIdentity(d), d.cite()),
			fact("Recorded", stamp(d.Time)+" by "+d.Actor, d.cite()))
		if r, ok := d.num("rows"); ok {
			s.Items = append(s.Items, fact("Size", num(r)+" rows", d.cite()))
		} else {
			s.Items = append(s.Items, gap("Size", "number of rows", "attrs.rows in the dataset.version event"))
		}
		if st := d.str("source_type"); st != "" {
			s.Items = append(s.Items, fact("Source", st+" "+d.str("source"), d.cite()))
		} else {
			s.Items = append(s.Items, gap("Source", "where the data comes from", "attrs.source_type and attrs.source in the dataset.version event"))
		}
		for _, k := range []string{"uri", "dvc_path", "dvc_md5", "git_repo", "git_revision", "mlflow_digest", "schema_digest"} {
			if x := d.str(k); x != "" {
				s.Items = append(s.Items, fact(k, x, d.cite()))
			}
		}
		if stats := d.nums("statistics"); len(stats) > 0 {
			s.Items = append(s.Items, fact("Statistics", sortedNums(stats), d.cite()))
		}
		var used []string
		var cites []Cite
		for _, n := range b.s.nodes {
			if (n.Type == "training.run" || n.Type == "model.version") && slices.Contains(n.Refs, d.ID) {
				label := n.str("run_id")
				if n.Type == "model.version" {
					label = n.model().String()
				}
				used = append(used, n.Type+" "+label)
				cites = append(cites, n.cite())
			}
		}
		if len(used) > 0 {
			s.Items = append(s.Items, fact("Used by", strings.Join(used, ", "), cites...))
		}
		s.Items = append(s.Items, b.provided("Collection, labelling and cleaning", b.info().AnnexIV, "annex_iv", "2(d)",
			"how the data was obtained, selected, labelled and cleaned"))
		all.Sections = append(all.Sections, s)
	}
	sec = append(sec, all)
	b.d.Sections = sec
}

// AnnexIVSections is the outline of Annex IV (technical documentation, Art. 11(1)): every numbered point.
var AnnexIVSections = [][2]string{
	{"1", "General description of the AI system"},
	{"1(a)", "Intended purpose, provider and version"},
	{"1(b)", "Interaction with hardware, software and other AI systems"},
	{"1(c)", "Versions of software and firmware, and update requirements"},
	{"1(d)", "Forms in which the system is placed on the market or put into service"},
	{"1(e)", "Hardware on which the system is intended to run"},
	{"1(f)", "Photographs or illustrations of products the system is a component of"},
	{"1(g)", "User interface provided to the deployer"},
	{"1(h)", "Instructions for use for the deployer"},
	{"2", "Elements of the AI system and its development process"},
	{"2(a)", "Development methods, pre-trained systems and third-party tools"},
	{"2(b)", "Design specifications, key choices and trade-offs"},
	{"2(c)", "System architecture and computational resources"},
	{"2(d)", "Data requirements and datasheets"},
	{"2(e)", "Assessment of the human oversight measures"},
	{"2(f)", "Pre-determined changes and continuous compliance"},
	{"2(g)", "Validation and testing, metrics, dated and signed test reports"},
	{"2(h)", "Cybersecurity measures"},
	{"3", "Monitoring, functioning and control"},
	{"4", "Appropriateness of the performance metrics"},
	{"5", "Risk management system"},
	{"6", "Relevant changes through the lifecycle"},
	{"7", "Harmonised standards and other specifications applied"},
	{"8", "Copy of the EU declaration of conformity"},
	{"9", "Post-market monitoring system and plan"},
}

func annexHeading(n string) string {
	for _, s := range AnnexIVSections {
		if s[0] == n {
			return s[1]
		}
	}
	panic("annex iv: no point " + n)
}

func (b *builder) annex(n string, items ...Item) Section {
	return b.section(n, annexHeading(n), items...)
}

// annexIV: the technical documentation, every point filled from the log or the definition, or marked missing.
func (b *builder) annexIV() {
	v := b.d.model
	b.summary("Technical documentation (Annex IV): " + b.def().def.Name)
	def, iv := b.def(), b.info().AnnexIV
	p := func(n, what string) Item { return b.provided("Provider's description", iv, "annex_iv", n, what) }

	a := []Item{fact("Intended purpose", def.def.IntendedPurpose, def.cite()), fact("Provider", def.def.Provider, def.cite())}
	if def.def.Version != "" {
		a = append(a, fact("System version", def.def.Version, def.cite()))
	} else {
		a = append(a, gap("System version", "the system's version", "version in the system definition"))
	}
	a = append(a, b.versionItems()...)
	var c []Item
	if reg := b.s.registration(v); reg != nil {
		if ad := sortedMap(strMap(reg, "artefact_digests")); ad != "" {
			c = append(c, fact("Artefacts", ad, reg.cite()))
		}
		if r := b.run(v); r != nil {
			if cr := r.str("code_revision"); cr != "" {
				c = append(c, fact("Code revision", cr, r.cite()))
			}
			if e := r.str("environment_digest"); e != "" {
				c = append(c, fact("Software environment", e, r.cite()))
			}
		}
	}
	c = append(c, p("1(c)", "versions of relevant software or firmware and requirements for version updates"))
	var forms []Item
	envs := map[string]*node{}
	for _, d := range b.s.of("deployment", nil) {
		envs[d.Deployment] = d
	}
	names := make([]string, 0, len(envs))
	for e := range envs {
		names = append(names, e)
	}
	slices.Sort(names)
	for _, e := range names {
		forms = append(forms, fact("Environment "+e, "last deployment event: "+envs[e].str("action")+" "+envs[e].model().String(), envs[e].cite()))
	}
	forms = append(forms, p("1(d)", "the forms in which the system is placed on the market or put into service (package, download, API)"))
	var ifu []Item
	if doc := b.s.latestDoc(KindInstructions, lifecycle.Version{}); doc != nil {
		ifu = append(ifu, fact("Instructions for use", "generated "+stamp(doc.Time)+", digest "+doc.str("digest"), doc.cite()))
	} else {
		ifu = append(ifu, gap("Instructions for use", "no instructions-for-use document is recorded", "a document event of kind instructions-for-use (cairn docs generate instructions-for-use)"))
	}
	one := b.section("1", annexHeading("1"))
	one.Sections = []Section{
		b.annex("1(a)", a...),
		b.annex("1(b)", p("1(b)", "how the system interacts with hardware, software or other AI systems")),
		b.annex("1(c)", c...),
		b.annex("1(d)", forms...),
		b.annex("1(e)", p("1(e)", "the hardware the system is intended to run on")),
		b.annex("1(f)", p("1(f)", "photographs or illustrations of the products the system is a component of, or that it is none")),
		b.annex("1(g)", p("1(g)", "a basic description of the user interface provided to the deployer")),
		b.annex("1(h)", ifu...),
	}

	var dev []Item
	if r := b.run(v); r != nil {
		dev = append(dev, runItems(r)...)
	} else {
		dev = append(dev, gap("Training run", "no training run is linked to the model version", "a training.run event referenced by the model.version event"))
	}
	dev = append(dev, p("2(a)", "development methods and steps, pre-trained systems and third-party tools used"))
	data := b.datasetSection("2(d)", annexHeading("2(d)"), v)
	data.Items = append(data.Items, p("2(d)", "training methodologies, data provenance, selection, labelling and cleaning"))
	if doc := b.s.latestDoc(KindDatasheet, v); doc != nil {
		data.Items = append(data.Items, fact("Datasheet", "generated "+stamp(doc.Time)+", digest "+doc.str("digest"), doc.cite()))
	}
	over := []Item{b.oversightPolicy()}
	over = append(over, b.oversightCounts(b.s.of("oversight", nil))...)
	over = append(over, p("2(e)", "an assessment of the human oversight measures and of how outputs are made interpretable"))
	var changes []Item
	for _, n := range b.s.of("model.version", func(n *node) bool { return n.str("change_classification") != "" }) {
		changes = append(changes, fact("Change "+n.model().String(), n.str("change_classification"), n.cite()))
	}
	changes = append(changes, p("2(f)", "pre-determined changes and the technical solutions that keep the system compliant"))
	test := b.section("2(g)", annexHeading("2(g)"))
	evs := b.s.forVersion("evaluation", v)
	if len(evs) > 0 {
		test.Tables = []Table{evaluationTable(evs)}
	} else {
		test.Items = append(test.Items, gap("Evaluation", "no evaluation of the model version", "an evaluation event"))
	}
	if doc := b.s.latestDoc(KindEvaluation, v); doc != nil {
		sigs := b.s.signatures(doc)
		// An approver may sign the report in the approval itself (attrs.signed_digest).
		sigs = append(sigs, b.s.forVersion("approval", v)...)
		sigs = slices.DeleteFunc(sigs, func(n *node) bool {
			return n.Type == "approval" && (n.str("signed_digest") != doc.str("digest") || n.str("signature") == "")
		})
		test.Items = append(test.Items, fact("Test report", "evaluation report generated "+stamp(doc.Time)+", digest "+doc.str("digest"), doc.cite()))
		if len(sigs) == 0 {
			test.Items = append(test.Items, gap("Signature", "the test report is not signed", "a signature recorded for the evaluation report (cairn docs sign)"))
		}
		for _, s := range sigs {
			by := "by key " + s.str("signer_fingerprint")
			if s.Type == "approval" {
				fp := "unreadable"
				if k, err := signature.ParsePublicKey(s.str("signer_key")); err == nil {
					fp = signature.Fingerprint(k)
				}
				by = "in the approval by " + s.Actor + " (" + s.str("decision") + "), key " + fp
			}
			test.Items = append(test.Items, fact("Signed", by+" on "+stamp(s.Time), s.cite()))
		}
	} else {
		test.Items = append(test.Items, gap("Test report", "no evaluation report is recorded for the model version", "a document event of kind evaluation-report (cairn docs generate evaluation-report), signed"))
	}
	sec := []Item{fact("Record keeping", "the log is tamper-evident: an RFC 6962 Merkle tree with checkpoints signed by the key at the end of this document")}
	sec = append(sec, p("2(h)", "cybersecurity measures (Art. 15(5))"))
	two := b.section("2", annexHeading("2"))
	two.Sections = []Section{
		b.annex("2(a)", dev...),
		b.annex("2(b)", p("2(b)", "design specifications: general logic, key design choices, optimisation objective, trade-offs")),
		b.annex("2(c)", p("2(c)", "system architecture and the computational resources used to develop, train, test and validate")),
		data,
		b.annex("2(e)", over...),
		b.annex("2(f)", changes...),
		test,
		b.annex("2(h)", sec...),
	}
	three := b.fairnessSection("3", evs)
	three.Heading = annexHeading("3")
	three.Items = append(three.Items, b.inputSpec(), p("3", "capabilities and limitations, foreseeable unintended outcomes and sources of risk"))
	four := b.annex("4")
	for _, e := range evs {
		if th := e.nums("thresholds"); len(th) > 0 {
			four.Items = append(four.Items, fact("Thresholds of the evaluation of "+stamp(e.Time), sortedNums(th), e.cite()))
		}
	}
	four.Items = append(four.Items, p("4", "why the performance metrics are appropriate for the system"))
	five := b.annex("5", p("5", "the risk management system (Art. 9)"))
	if inc := b.s.of("incident", nil); len(inc) > 0 {
		five.Items = append(five.Items, fact("Incidents recorded", strconv.Itoa(len(inc)), cites(inc)...))
	}
	six := b.annex("6")
	for _, d := range b.s.defs {
		six.Items = append(six.Items, fact("System definition", d.Type+" at "+stamp(d.Time)+" by "+d.Actor, d.cite()))
	}
	for _, n := range b.s.of("model.version", func(n *node) bool { return n.str("alias") == "" }) {
		six.Items = append(six.Items, fact("Model version", n.model().String()+" registered "+stamp(n.Time), n.cite()))
	}
	if deps := b.s.of("deployment", nil); len(deps) > 0 {
		six.Tables = []Table{deploymentTable(deps)}
	}
	seven := b.annex("7", b.standards())
	eight := b.annex("8")
	if doc := b.s.latestDoc(KindDeclaration, lifecycle.Version{}); doc != nil {
		eight.Items = append(eight.Items, fact("EU declaration of conformity", "generated "+stamp(doc.Time)+", digest "+doc.str("digest")+"; a copy is kept with this documentation", doc.cite()))
		for _, s := range b.s.signatures(doc) {
			eight.Items = append(eight.Items, fact("Signed", "by key "+s.str("signer_fingerprint")+" on "+stamp(s.Time), s.cite()))
		}
	} else {
		eight.Items = append(eight.Items, gap("EU declaration of conformity", "no declaration of conformity is recorded", "a document event of kind declaration-of-conformity (cairn docs generate declaration-of-conformity)"))
	}
	nine := b.annex("9")
	if len(def.def.Monitoring) > 0 {
		nine.Items = append(nine.Items, fact("Monitoring configuration", string(def.def.Monitoring), def.cite()))
	} else {
		nine.Items = append(nine.Items, gap("Monitoring configuration", "the system definition configures no monitoring", "monitoring in the system definition"))
	}
	if doc := b.s.latestDoc(KindMonitoring, lifecycle.Version{}); doc != nil {
		nine.Items = append(nine.Items, fact("Latest monitoring summary", "generated "+stamp(doc.Time)+", digest "+doc.str("digest"), doc.cite()))
	}
	nine.Items = append(nine.Items, p("9", "the post-market monitoring plan (Art. 72(3))"))
	b.d.Sections = []Section{one, two, three, four, five, six, seven, eight, nine}
}

func cites(ns []*node) []Cite {
	out := make([]Cite, len(ns))
	for i, n := range ns {
		out[i] = n.cite()
	}
	return out
}

func (b *builder) standards() Item {
	if st := b.info().Standards; len(st) > 0 {
		return fact("Standards applied", strings.Join(st, "; "), b.defCite())
	}
	return gap("Standards applied", "the harmonised standards or common specifications applied, or the solutions adopted instead", supplyInfo("standards"))
}

func (b *builder) oversightPolicy() Item {
	if o := b.def().def.Oversight; len(o) > 0 {
		return fact("Oversight policy", string(o), b.defCite())
	}
	return gap("Oversight policy", "the system definition sets no oversight policy (which decisions go to human review)", "oversight in the system definition")
}

func (b *builder) oversightCounts(over []*node) []Item {
	if len(over) == 0 {
		return []Item{fact("Oversight actions recorded", "none")}
	}
	counts := map[string]int{}
	for _, o := range over {
		counts[o.str("action")]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" "+strconv.Itoa(counts[k]))
	}
	return []Item{fact("Oversight actions recorded", strings.Join(parts, ", ")+" (first and last cited)", over[0].cite(), over[len(over)-1].cite())}
}

func (b *builder) inputSpec() Item {
	def := b.def()
	if len(def.def.InputSchema) == 0 {
		return gap("Input data specification", "the system definition has no input schema", "input_schema in the system definition")
	}
	return fact("Input data specification", string(def.def.InputSchema), def.cite())
}

// AnnexVItems is the outline of Annex V (EU declaration of conformity, Art. 47).
var AnnexVItems = [][2]string{
	{"1", "AI system name, type and unambiguous reference"},
	{"2", "Name and address of the provider"},
	{"3", "Issued under the sole responsibility of the provider"},
	{"4", "Conformity with Regulation (EU) 2024/1689 and other Union law"},
	{"5", "Compliance with Union data protection law"},
	{"6", "Harmonised standards and common specifications"},
	{"7", "Notified body, procedure and certificate"},
	{"8", "Place and date of issue, signatory and signature"},
}

// declaration: the EU declaration of conformity, Annex V items 1–8.
func (b *builder) declaration() {
	b.summary("EU declaration of conformity: " + b.def().def.Name)
	def, info := b.def(), b.info()
	h := func(n string, items ...Item) Section { return b.section(n, AnnexVItems[n[0]-'1'][1], items...) }
	one := []Item{fact("Name", def.def.Name, def.cite()), fact("Reference", "system "+def.def.ID, def.cite())}
	if def.def.Version != "" {
		one = append(one, fact("System version", def.def.Version, def.cite()))
	}
	one = append(one, b.versionItems()...)
	if def.def.EUDatabaseID != "" {
		one = append(one, fact("EU database registration", def.def.EUDatabaseID, def.cite()))
	} else {
		one = append(one, gap("EU database registration", "the registration id in the EU database (Art. 49, 71)", "eu_database_id in the system definition"))
	}
	two := []Item{fact("Provider", def.def.Provider, def.cite())}
	if info.Address != "" {
		two = append(two, fact("Address", info.Address, def.cite()))
	} else {
		two = append(two, gap("Address", "the provider's address", supplyInfo("address")))
	}
	if info.AuthorisedRepresentative != "" {
		two = append(two, fact("Authorised representative", info.AuthorisedRepresentative, def.cite()))
	}
	three := []Item{fact("Statement", "This declaration of conformity is issued under the sole responsibility of "+def.def.Provider+".", def.cite())}
	law := "Regulation (EU) 2024/1689 (Artificial Intelligence Act)"
	four := []Item{fact("Statement", def.def.Name+" is in conformity with "+law+".", def.cite())}
	if len(info.UnionLaw) > 0 {
		four = append(four, fact("Other Union legislation", strings.Join(info.UnionLaw, "; "), def.cite()))
	} else {
		four = append(four, gap("Other Union legislation", "other Union legislation requiring a declaration of conformity, or that there is none", supplyInfo("union_law")))
	}
	var five []Item
	if info.PersonalData != "" {
		five = append(five, fact("Statement", info.PersonalData, def.cite()))
	} else {
		five = append(five, gap("Statement", "the statement of compliance with Regulations (EU) 2016/679 and 2018/1725 and Directive (EU) 2016/680", supplyInfo("personal_data")))
	}
	if len(def.def.FieldPolicy) > 0 {
		five = append(five, fact("Record keeping", "the system's log pseudonymises personal data at capture under the field policy of its definition", def.cite()))
	}
	var seven []Item
	switch {
	case info.NotifiedBody != nil:
		nb := info.NotifiedBody
		seven = append(seven, fact("Notified body", nb.Name+", number "+nb.Number, def.cite()))
		if nb.Procedure != "" {
			seven = append(seven, fact("Procedure", nb.Procedure, def.cite()))
		}
		if nb.Certificate != "" {
			seven = append(seven, fact("Certificate", nb.Certificate, def.cite()))
		} else {
			seven = append(seven, gap("Certificate", "the certificate's identification", supplyInfo("notified_body.certificate")))
		}
	case info.ConformityProcedure != "":
		seven = append(seven, fact("Procedure", info.ConformityProcedure+"; no notified body was involved", def.cite()))
	default:
		seven = append(seven, gap("Notified body", "the notified body and certificate, or the procedure under which none is involved", supplyInfo("notified_body or provider_info.conformity_procedure")))
	}
	var eight []Item
	if s := info.Signatory; s != nil {
		if s.Place != "" {
			eight = append(eight, fact("Place of issue", s.Place, def.cite()))
		} else {
			eight = append(eight, gap("Place of issue", "where the declaration is issued", supplyInfo("signatory.place")))
		}
		eight = append(eight, fact("Date of issue", b.s.at.Format(time.DateOnly)))
		eight = append(eight, fact("Signatory", s.Name+", "+s.Function, def.cite()))
		behalf := def.def.Provider
		if s.OnBehalfOf != "" {
			behalf = s.OnBehalfOf
		}
		eight = append(eight, fact("On behalf of", behalf, def.cite()))
	} else {
		eight = append(eight, fact("Date of issue", b.s.at.Format(time.DateOnly)),
			gap("Signatory", "the name and function of the person signing, and for whom", supplyInfo("signatory")))
	}
	eight = append(eight, fact("Signature", "a detached signature over this document's digest, recorded in the log with it (cairn docs sign) and checked by cairn verify"))
	b.d.Sections = []Section{
		h("1", one...), h("2", two...), h("3", three...), h("4", four...), h("5", five...),
		h("6", b.standards()), h("7", seven...), h("8", eight...),
	}
}

// InstructionsSections is the outline of Art. 13(3), instructions for use.
var InstructionsSections = [][2]string{
	{"(a)", "Identity and contact details of the provider"},
	{"(b)", "Characteristics, capabilities and limitations of performance"},
	{"(b)(i)", "Intended purpose"},
	{"(b)(ii)", "Accuracy, robustness and cybersecurity"},
	{"(b)(iii)", "Circumstances that may lead to risks"},
	{"(b)(iv)", "Capabilities to explain the output"},
	{"(b)(v)", "Performance for specific persons or groups"},
	{"(b)(vi)", "Input data specifications and training, validation and testing data"},
	{"(b)(vii)", "Information to interpret the output"},
	{"(c)", "Pre-determined changes"},
	{"(d)", "Human oversight measures"},
	{"(e)", "Computational and hardware resources, lifetime and maintenance"},
	{"(f)", "Mechanisms to collect, store and interpret the logs"},
}

func ifuHeading(n string) string {
	for _, s := range InstructionsSections {
		if s[0] == n {
			return s[1]
		}
	}
	panic("instructions: no point " + n)
}

// instructions: a skeleton of the instructions for use (Art. 13(3)), filled where the log or definition knows.
func (b *builder) instructions() {
	v := b.d.model
	b.summary("Instructions for use: " + b.def().def.Name)
	def, info := b.def(), b.info()
	p := func(n, what string) Item {
		return b.provided("Provider's text", info.Instructions, "instructions", n, what)
	}
	s := func(n string, items ...Item) Section { return b.section(n, ifuHeading(n), items...) }
	a := []Item{fact("Provider", def.def.Provider, def.cite())}
	if info.Address != "" {
		a = append(a, fact("Address", info.Address, def.cite()))
	} else {
		a = append(a, gap("Address", "the provider's address", supplyInfo("address")))
	}
	if info.Contact != "" {
		a = append(a, fact("Contact", info.Contact, def.cite()))
	} else {
		a = append(a, gap("Contact", "how deployers reach the provider", supplyInfo("contact")))
	}
	evs := b.s.forVersion("evaluation", v)
	acc := s("(b)(ii)")
	if len(evs) > 0 {
		e := evs[len(evs)-1]
		rows, _ := metricRows(e)
		acc.Tables = []Table{{Caption: "Declared metrics (latest evaluation of " + orNone(b.d.ModelVersion) + ")", Columns: []string{"metric", "value", "threshold", "result"}, Rows: rows}}
	} else {
		acc.Items = append(acc.Items, gap("Metrics", "no evaluation of the model version", "an evaluation event"))
	}
	acc.Items = append(acc.Items, p("b(ii)", "robustness and cybersecurity levels and what may affect them"))
	groups := b.fairnessSection("(b)(v)", evs)
	groups.Heading = ifuHeading("(b)(v)")
	bsec := s("(b)")
	bsec.Sections = []Section{
		s("(b)(i)", fact("Intended purpose", def.def.IntendedPurpose, def.cite())),
		acc,
		s("(b)(iii)", p("b(iii)", "known or foreseeable circumstances of use or misuse that may lead to risks")),
		s("(b)(iv)", p("b(iv)", "technical capabilities that help explain the output")),
		groups,
		s("(b)(vi)", b.inputSpec(), p("b(vi)", "information on the training, validation and testing data")),
		s("(b)(vii)", p("b(vii)", "how deployers should interpret the output")),
	}
	over := append([]Item{b.oversightPolicy()}, p("d", "the human oversight measures and the aids to interpret outputs"))
	logs := []Item{
		fact("Log", "every event of the system is recorded in a tamper-evident log (checkpoint origin "+originOf(b.s.note)+"); checkpoints are signed and verify with the key at the end of this document"),
		fact("Reading the log", "GET /v1/systems/"+b.d.System+"/events (query), /reconstruct/{event} (one decision with its model, approval, data and oversight), /export/{event} (a verifiable evidence bundle); every read is itself recorded"),
	}
	if r := def.def.Retention; len(r) > 0 {
		logs = append(logs, fact("Retention", string(r), def.cite()))
	} else {
		logs = append(logs, gap("Retention", "the system definition sets no retention schedule (logs are kept at least six months, Art. 19, 26(6))", "retention in the system definition"))
	}
	if len(def.def.FieldPolicy) > 0 {
		logs = append(logs, fact("Personal data", "pseudonymised at capture and sealed per event, under the field policy of the definition", def.cite()))
	}
	b.d.Sections = []Section{
		s("(a)", a...), bsec,
		s("(c)", p("c", "changes to the system and its performance pre-determined by the provider")),
		s("(d)", over...),
		s("(e)", p("e", "computational and hardware resources, expected lifetime, maintenance and update measures")),
		s("(f)", logs...),
	}
}

// MonitoringPlan is the outline of a post-market monitoring plan (Art. 72; reference §5.5).
var MonitoringPlan = [][2]string{
	{"1", "scope, system and version coverage, proportionality"},
	{"2", "data sources"},
	{"3", "metrics and thresholds for continuous compliance"},
	{"4", "collection methods, frequency and exclusions"},
	{"5", "analysis methods, including interaction with other AI systems"},
	{"6", "triggers for corrective action, risk-management updates and incident reports"},
	{"7", "roles, escalation and communication with deployers and authorities"},
	{"8", "records produced and their retention"},
}

// monitoring: the post-market monitoring summary (Art. 72) over a period.
func (b *builder) monitoring() {
	s := b.s
	b.summary("Post-market monitoring summary: " + b.def().def.Name)
	per := "events whose time is in [" + stamp(s.from) + ", " + stamp(s.to) + ")"
	one := b.section("1", "Scope and period", fact("Period", per), fact("System", b.def().def.Name+" ("+b.d.System+")", b.defCite()))
	src := countTable("Events in the period, by type (first and last cited)", "type", s.inPeriod)
	two := b.section("2", "Data sources")
	two.Tables = []Table{src}
	if len(s.inPeriod) == 0 {
		two.Items = []Item{fact("Events", "none in the period")}
	}
	st := s.period
	three := b.section("3", "Performance in operation")
	if st.count == 0 {
		three.Items = []Item{fact("Inferences", "none recorded in the period")}
	} else {
		span := []Cite{st.first.cite(), st.last.cite()}
		three.Items = append(three.Items, fact("Inferences", strconv.FormatUint(st.count, 10)+" (first and last cited)", span...))
		if st.latencyN > 0 {
			three.Items = append(three.Items, fact("Latency", fmt.Sprintf("mean %s ms, max %s ms over %d inferences", num(round3(st.latencySum/float64(st.latencyN))), num(st.latencyMax), st.latencyN), span...))
		}
		if st.confN > 0 {
			three.Items = append(three.Items, fact("Confidence", fmt.Sprintf("mean %s over %d inferences", num(round3(st.confSum/float64(st.confN))), st.confN), span...))
		}
		three.Tables = append(three.Tables, countTable("Inferences per model version (first and last cited)", "model version", st.byVersion),
			countTable("Inferences per deployment (first and last cited)", "deployment", st.byDeploy))
		if len(st.flags) > 0 {
			three.Tables = append(three.Tables, countTable("Anomaly flags on inferences (first and last cited)", "flag", st.flags))
		}
		if len(st.errors) > 0 {
			three.Tables = append(three.Tables, countTable("Errors (first and last cited)", "error code", st.errors))
		}
	}
	inPeriod := func(typ string) []*node { return s.of(typ, func(n *node) bool { return s.inside(n.Time) }) }
	over := inPeriod("oversight")
	four := b.section("4", "Human oversight", b.oversightCounts(over)...)
	if st.count > 0 {
		var changed []*node
		for _, o := range over {
			if a := o.str("action"); a == "overridden" || a == "reversed" || a == "stopped" {
				changed = append(changed, o)
			}
		}
		cs := []Cite{st.first.cite(), st.last.cite()}
		if len(changed) > 0 {
			cs = append(cs, changed[0].cite(), changed[len(changed)-1].cite())
		}
		four.Items = append(four.Items, fact("Override rate", fmt.Sprintf("%d overridden, reversed or stopped of %d inferences (%s%%; first and last of each cited)", len(changed), st.count, num(round3(100*float64(len(changed))/float64(st.count)))), cs...))
	}
	five := b.section("5", "Anomalies and rule violations")
	anomalies := inPeriod("anomaly")
	if len(anomalies) == 0 {
		five.Items = []Item{fact("Anomalies", "none recorded in the period")}
	} else {
		t := Table{Caption: "Anomalies", Columns: []string{"time", "kind", "severity", "metric", "value", "threshold"}}
		for _, a := range anomalies {
			val, _ := a.num("value")
			th, _ := a.num("threshold")
			t.Rows = append(t.Rows, Row{Cells: []string{stamp(a.Time), a.str("kind"), orNone(a.str("severity")), orNone(a.str("metric")), num(val), num(th)}, Cites: []Cite{a.cite()}})
		}
		five.Tables = []Table{t}
	}
	var broken []*node
	for _, n := range s.nodes {
		if len(n.Violations) > 0 && s.inside(n.Time) {
			broken = append(broken, n)
		}
	}
	if len(broken) > 0 {
		t := Table{Caption: "Events that break a lifecycle rule", Columns: []string{"time", "type", "rules"}}
		for _, n := range broken {
			t.Rows = append(t.Rows, Row{Cells: []string{stamp(n.Time), n.Type, strings.Join(n.Violations, ", ")}, Cites: []Cite{n.cite()}})
		}
		five.Tables = append(five.Tables, t)
	}
	six := b.section("6", "Serious incidents")
	if inc := inPeriod("incident"); len(inc) == 0 {
		six.Items = []Item{fact("Incidents", "none recorded in the period")}
	} else {
		t := Table{Caption: "Incidents", Columns: []string{"time", "incident", "harm category", "detected by", "status", "report deadline"}}
		for _, n := range inc {
			t.Rows = append(t.Rows, Row{Cells: []string{stamp(n.Time), n.str("incident_id"), orNone(n.str("harm_category")), orNone(n.str("detected_by")), orNone(n.str("status")), orNone(n.str("report_deadline"))}, Cites: []Cite{n.cite()}})
		}
		six.Tables = []Table{t}
	}
	seven := b.section("7", "Changes in the period")
	var ch []*node
	for _, n := range s.nodes {
		switch n.Type {
		case "system.registered", "system.updated", "model.version", "deployment", "approval":
			if s.inside(n.Time) {
				ch = append(ch, n)
			}
		}
	}
	if len(ch) == 0 {
		seven.Items = []Item{fact("Changes", "none in the period")}
	} else {
		t := Table{Caption: "Lifecycle events", Columns: []string{"time", "type", "model version", "detail", "by"}}
		for _, n := range ch {
			detail := n.str("action") + n.str("decision") + n.str("alias")
			t.Rows = append(t.Rows, Row{Cells: []string{stamp(n.Time), n.Type, orDash(n.model().String()), orDash(detail), n.Actor}, Cites: []Cite{n.cite()}})
		}
		seven.Tables = []Table{t}
	}
	eight := b.section("8", "Post-market monitoring plan")
	if m := b.def().def.Monitoring; len(m) > 0 {
		eight.Items = append(eight.Items, fact("Monitoring configuration", string(m), b.defCite()))
	}
	for _, pl := range MonitoringPlan {
		eight.Items = append(eight.Items, b.provided("Plan "+pl[0]+": "+pl[1], b.info().MonitoringPlan, "monitoring_plan", pl[0], pl[1]))
	}
	b.d.Sections = []Section{one, two, three, four, five, six, seven, eight}
}

func round3(f float64) float64 { return roundTo(f, 3) }

func countTable(caption, col string, m spans) Table {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	t := Table{Caption: caption, Columns: []string{col, "count"}}
	for _, k := range keys {
		sp := m[k]
		cites := []Cite{sp.first.cite()}
		if sp.last != sp.first {
			cites = append(cites, sp.last.cite())
		}
		t.Rows = append(t.Rows, Row{Cells: []string{k, strconv.FormatUint(sp.count, 10)}, Cites: cites})
	}
	return t
}

// reconstruction: the audit reconstruction report of one event, from envelopes only.
func (b *builder) reconstruction(ref string) error {
	s := b.s
	ev := s.target
	if ref == "" {
		return fmt.Errorf("%w: a reconstruction names its event (an id or leaf index)", ErrRequest)
	}
	if ev == nil {
		return fmt.Errorf("%w: event %q is not in the log state at %s", ErrRequest, ref, b.d.At)
	}
	b.summary("Audit reconstruction: event " + strconv.FormatUint(ev.Index, 10))
	b.d.subject = ev.ID
	c := ev.cite()
	facts := []Item{fact("Type", ev.Type, c), fact("Time", stamp(ev.Time), c), fact("Recorded", stamp(ev.Recorded), c), fact("Appended by", ev.Actor, c)}
	if ev.Model != nil {
		facts = append(facts, fact("Model", ev.model().String()+" "+ev.Model.Digest, c))
	}
	if ev.Deployment != "" {
		facts = append(facts, fact("Deployment", ev.Deployment, c))
	}
	if len(ev.Attrs) > 0 {
		facts = append(facts, fact("Attributes", string(ev.Attrs), c))
	}
	two := b.section("2", "What was live")
	three := b.section("3", "Lineage of the model version")
	if ev.Deployment != "" {
		if live, err := s.reg.LiveIn(s.system, ev.Deployment, ev.Time); err == nil {
			st := live.State
			if live.State == "live" {
				st = "live: " + live.Name + "@" + live.Version
			}
			two.Items = append(two.Items, fact("In "+ev.Deployment+" at the event's time", st, s.citeNode(live.Deployment)))
			if ev.Model != nil {
				two.Items = append(two.Items, fact("The event's model is the live version", yesNo(live.State == "live" && live.Name == ev.Model.Name && live.Version == ev.Model.Version), c, s.citeNode(live.Deployment)))
			}
			if live.ConfigDigest != "" {
				two.Items = append(two.Items, fact("Configuration", live.ConfigDigest, s.citeNode(live.Deployment)))
			}
			if live.Approval != nil {
				two.Items = append(two.Items, fact("Approval", "by "+live.Approval.Actor+" at "+stamp(live.Approval.Time), s.citeNode(live.Approval)))
			} else if live.State == "live" {
				two.Items = append(two.Items, gap("Approval", "the deployment rests on no approval that counts", "an approval event of the version, before the deployment"))
			}
			for _, n := range live.RecordedLater {
				two.Items = append(two.Items, fact("Recorded later", n.Type+" recorded "+stamp(n.Recorded)+" after the event's time", s.citeNode(n)))
			}
		} else {
			two.Items = append(two.Items, gap("Deployment", "no deployment event in "+ev.Deployment+" at or before the event's time", "a deployment event"))
		}
	} else {
		two.Items = append(two.Items, fact("Deployment", "the event names none", c))
	}
	if ev.Model != nil {
		b.d.model = ev.model()
		if r := b.run(ev.model()); r != nil {
			three.Items = append(three.Items, runItems(r)...)
		}
		three.Tables = append(three.Tables, b.datasetSection("", "", ev.model()).Tables...)
		if evs := s.forVersion("evaluation", ev.model()); len(evs) > 0 {
			three.Tables = append(three.Tables, evaluationTable(evs))
		}
		if aps := s.forVersion("approval", ev.model()); len(aps) > 0 {
			three.Tables = append(three.Tables, approvalTable(aps))
		}
	}
	if len(three.Items)+len(three.Tables) == 0 {
		three.Items = []Item{fact("Lineage", "the event names no model version with a recorded lineage", c)}
	}
	four := b.section("4", "Human oversight")
	id, _ := event.ParseUUID(ev.ID)
	over := s.reg.Oversight(s.system, id)
	if len(over) == 0 {
		four.Items = []Item{fact("Oversight", "no oversight event refers to this event")}
	} else {
		t := Table{Caption: "Oversight actions", Columns: []string{"time", "action", "by", "role"}}
		for _, o := range over {
			n := s.byRef(o.ID)
			t.Rows = append(t.Rows, Row{Cells: []string{stamp(n.Time), n.str("action"), n.Actor, orNone(n.str("overseer_role"))}, Cites: []Cite{n.cite()}})
		}
		four.Tables = []Table{t}
	}
	five := b.section("5", "Personal data")
	if ev.Payload != nil {
		five.Items = []Item{fact("Payload", fmt.Sprintf("sealed, %d bytes, ciphertext digest %s; not reproduced here. `cairn export` discloses it in a verifiable bundle and records the access", ev.Payload.Size, ev.Payload.Digest), c)}
	} else {
		five.Items = []Item{fact("Payload", "the event has none", c)}
	}
	b.d.Sections = []Section{b.section("1", "The event", facts...), two, three, four, five}
	return nil
}
