package system

import (
	"errors"
	"slices"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// ProviderInfo is the provider_info member of a definition: the facts generated documents need that no event can
// supply (docs/documents.md). Every member is optional; a document reports what is missing, never invents it.
type ProviderInfo struct {
	// Address is the provider's postal address (Annex V 2, Art. 13(3)(a)).
	Address string `json:"address,omitzero"`
	// Contact is how deployers and authorities reach the provider (Art. 13(3)(a)).
	Contact string `json:"contact,omitzero"`
	// AuthorisedRepresentative names the authorised representative and its address, where there is one.
	AuthorisedRepresentative string `json:"authorised_representative,omitzero"`
	// ConformityProcedure is the conformity assessment procedure performed (Art. 43), e.g.
	// "internal control (Annex VI)".
	ConformityProcedure string `json:"conformity_procedure,omitzero"`
	// NotifiedBody is the notified body involved, where one is (Annex V 7).
	NotifiedBody *NotifiedBody `json:"notified_body,omitzero"`
	// Standards lists the harmonised standards or common specifications applied (Annex IV 7, Annex V 6).
	Standards []string `json:"standards,omitzero"`
	// UnionLaw lists other Union legislation under which the system needs a declaration (Annex V 4).
	UnionLaw []string `json:"union_law,omitzero"`
	// PersonalData states compliance with Regulations (EU) 2016/679 and 2018/1725 and Directive (EU) 2016/680
	// where personal data is processed (Annex V 5), e.g. a reference to the DPIA.
	PersonalData string `json:"personal_data,omitzero"`
	// Signatory signs the declaration of conformity (Annex V 8).
	Signatory *Signatory `json:"signatory,omitzero"`
	// AnnexIV, Instructions and MonitoringPlan hold the provider's text or document references for points of
	// Annex IV ("2(b)"), Art. 13(3) ("b(iii)") and the post-market monitoring plan ("7") that the log cannot know.
	AnnexIV        map[string]string `json:"annex_iv,omitzero"`
	Instructions   map[string]string `json:"instructions,omitzero"`
	MonitoringPlan map[string]string `json:"monitoring_plan,omitzero"`
}

// NotifiedBody identifies a notified body and what it did (Annex V 7).
type NotifiedBody struct {
	Name        string `json:"name"`
	Number      string `json:"number"`
	Procedure   string `json:"procedure,omitzero"`
	Certificate string `json:"certificate,omitzero"`
}

// Signatory is who signs the declaration of conformity and for whom (Annex V 8).
type Signatory struct {
	Name       string `json:"name"`
	Function   string `json:"function"`
	OnBehalfOf string `json:"on_behalf_of,omitzero"`
	Place      string `json:"place,omitzero"`
}

// ParseProviderInfo parses a provider_info member (nil or empty: nothing known).
func ParseProviderInfo(b jsontext.Value) (*ProviderInfo, error) {
	var p ProviderInfo
	if len(b) == 0 {
		return &p, nil
	}
	if err := json.Unmarshal(b, &p, json.RejectUnknownMembers(true)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) && se.JSONPointer != "" {
			return nil, &FieldError{Field: "/provider_info" + string(se.JSONPointer), Reason: "unknown member or wrong type"}
		}
		return nil, &FieldError{Field: "/provider_info", Reason: "must be an object"}
	}
	if p.NotifiedBody != nil && (p.NotifiedBody.Name == "" || p.NotifiedBody.Number == "") {
		return nil, &FieldError{Field: "/provider_info/notified_body", Reason: "needs name and number"}
	}
	if p.Signatory != nil && (p.Signatory.Name == "" || p.Signatory.Function == "") {
		return nil, &FieldError{Field: "/provider_info/signatory", Reason: "needs name and function"}
	}
	return &p, nil
}

// PersonalFields returns the payload paths (in field-policy path syntax: "input.applicant.name",
// "input.items[].email") that an input_schema member marks personal with "x-personal": true. The schema is a JSON
// Schema of the event payload; only "properties", "items" and "x-personal" are read.
func PersonalFields(schema jsontext.Value) ([]string, error) {
	if len(schema) == 0 {
		return nil, nil
	}
	var root map[string]any
	if err := json.Unmarshal(schema, &root); err != nil {
		return nil, &FieldError{Field: "/input_schema", Reason: "must be an object"}
	}
	var out []string
	var walk func(n map[string]any, path string) error
	walk = func(n map[string]any, path string) error {
		if p, ok := n["x-personal"]; ok {
			b, isBool := p.(bool)
			if !isBool {
				return &FieldError{Field: "/input_schema", Reason: "x-personal at " + path + " must be a boolean"}
			}
			if b {
				if path == "" {
					return &FieldError{Field: "/input_schema", Reason: "x-personal on the root: name the personal fields"}
				}
				out = append(out, path)
				return nil
			}
		}
		if props, ok := n["properties"].(map[string]any); ok {
			names := make([]string, 0, len(props))
			for k := range props {
				names = append(names, k)
			}
			slices.Sort(names)
			for _, k := range names {
				c, ok := props[k].(map[string]any)
				if !ok {
					return &FieldError{Field: "/input_schema", Reason: "property " + k + " must be a schema object"}
				}
				p := k
				if path != "" {
					p = path + "." + k
				}
				if err := walk(c, p); err != nil {
					return err
				}
			}
		}
		if items, ok := n["items"].(map[string]any); ok {
			if err := walk(items, path+"[]"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return nil, err
	}
	return out, nil
}
