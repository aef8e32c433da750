package index

import (
	"context"
	"fmt"
)

// Forget clears what the index holds of entries whose envelopes retention destroyed, beyond their leaf fields:
// their rows keep system, index, id, type and recorded time, as a rebuild from the log would give them, and
// lose time, model, deployment and actor. Entries not indexed yet need nothing: they are indexed from the log
// as it is now.
func (x *Index) Forget(ctx context.Context, system string, indexes []uint64) error {
	tx, err := x.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `UPDATE events SET time = NULL, model_name = NULL, model_version = NULL,
		deployment = NULL, actor = NULL WHERE system = ? AND idx = ?`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, i := range indexes {
		if _, err := st.ExecContext(ctx, system, int64(i)); err != nil {
			return fmt.Errorf("forget %s[%d]: %w", system, i, err)
		}
	}
	return tx.Commit()
}
