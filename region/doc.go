// Package region holds the pure types and logic every layer shares about key
// ranges: range arithmetic, region epochs and the epoch-check table, the
// region errors a store returns, and RegionTree, the key-to-region index used
// by PD, the client's cache and the store itself. It does no I/O and imports
// nothing of Basalt's but proto.
package region
