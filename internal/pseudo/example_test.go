package pseudo_test

import (
	"bytes"
	"fmt"

	"github.com/cairn-ai/cairn/internal/canon"
	"github.com/cairn-ai/cairn/internal/pseudo"
)

type keyring map[string][]byte

func (k keyring) DomainKey(domain string) ([]byte, error) { return k[domain], nil }

func ExamplePolicy_Apply() {
	policy, err := pseudo.Parse([]byte(`{"domain": "customers", "fields": {
		"subject":          {"action": "pseudonym"},
		"input.name":       {"action": "drop"},
		"input.income":     {"action": "generalize", "bands": [0, 20000, 50000]},
		"input.birth_date": {"action": "generalize", "to": "year"}}}`))
	if err != nil {
		panic(err)
	}
	payload, _ := canon.Append(nil, []byte(`{"subject": "alice@example.com", "input": {"name": "Alice",
		"income": 42000, "birth_date": "1964-08-12", "term_months": 36}, "output": {"score": 0.82}}`))
	keys := keyring{"customers": bytes.Repeat([]byte{1}, 32)}
	out, err := policy.Apply(nil, payload, keys)
	fmt.Println(string(out), err)
	// Output:
	// {"input":{"birth_date":"1964","income":"[20000,50000)","term_months":36},"output":{"score":0.82},"subject":"pn:1RBP73E6Bx4eAMZW1UYAPl"} <nil>
}
