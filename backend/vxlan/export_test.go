package vxlan

// LastCounts reports what the last Reconcile changed.
func (b *Backend) LastCounts() Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}
