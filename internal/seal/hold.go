package seal

import "strings"

// HoldKeyID names the hold key of a period: events under a legal hold (and a system's definition in force) are
// re-wrapped under it before their period key is destroyed. It is a period key like any other, of the pseudo
// class "hold-<class>", so it lives and dies in the same keyring; ledger.OpenSealed falls back to it.
func HoldKeyID(periodID string) string {
	parts := strings.Split(periodID, "/")
	if len(parts) != 3 || strings.HasPrefix(parts[1], "hold-") {
		return ""
	}
	return parts[0] + "/hold-" + parts[1] + "/" + parts[2]
}
