package pseudo

import (
	"fmt"
	"strings"
	"testing"
)

// benchPayload is a ~1 KiB canonical inference payload under examplePolicy: 2 domains, 7 pseudonyms, 2
// generalisations, a dropped name and a kept output.
func benchPayload(t testing.TB) []byte {
	var items []string
	for i := range 5 {
		items = append(items, fmt.Sprintf(`{"email":"person%d@example.com","qty":%d,"sku":"SKU-%05d"}`, i, i+1, i*7919))
	}
	return mustCanon(t, `{"subject":"customer-000123456","input":{"name":"Erika Mustermann","iban":"DE89370400440532013000",`+
		`"income":52000,"birth_date":"1964-08-12","employment":"permanent","years_at_address":7,"loans":[{"amount":12000,`+
		`"months":48,"rate":0.049},{"amount":3000,"months":12,"rate":0.069}],"items":[`+strings.Join(items, ",")+`],`+
		`"notes":"applicant requested a callback; documents complete; no adverse records found in bureau check"},`+
		`"output":{"decision":"approve","score":0.8231,"threshold":0.75,"explanation":{"top_features":["income","employment",`+
		`"years_at_address","loans"],"weights":[0.31,0.22,0.17,-0.12]},"model_latency_ms":12.5,`+
		`"reason_codes":["R01","R07","R12"],"limits":{"max_amount":25000,"max_months":60}}}`)
}

func BenchmarkApply(b *testing.B) {
	p := mustParse(b, examplePolicy)
	in := benchPayload(b)
	out := make([]byte, 0, 2*len(in))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if out, err = p.Apply(out[:0], in, keys); err != nil {
			b.Fatal(err)
		}
	}
}
