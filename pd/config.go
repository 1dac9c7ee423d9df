package pd

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as "30m", "5s".
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// ScheduleConfig is PD's scheduling configuration. Names follow TiKV's PD.
type ScheduleConfig struct {
	MaxReplicas int `json:"max-replicas"`
	// A store not heard from for this long is down: its replicas are
	// re-created elsewhere.
	MaxStoreDownTime Duration `json:"max-store-down-time"`
	// A store not heard from for this long is disconnected: no new replicas
	// or leaders go to it.
	StoreDisconnectTime Duration `json:"store-disconnect-time"`

	RegionMaxSize   uint64 `json:"region-max-size"` // bytes; split above
	RegionMaxKeys   uint64 `json:"region-max-keys"` // split above
	RegionSplitSize uint64 `json:"region-split-size"`
	RegionSplitKeys uint64 `json:"region-split-keys"`
	// Merge regions smaller than both limits into a neighbour.
	MaxMergeRegionSize uint64   `json:"max-merge-region-size"`
	MaxMergeRegionKeys uint64   `json:"max-merge-region-keys"`
	SplitMergeInterval Duration `json:"split-merge-interval"`

	// Concurrent operators a store may take part in.
	LeaderScheduleLimit  int `json:"leader-schedule-limit"`
	RegionScheduleLimit  int `json:"region-schedule-limit"`
	ReplicaScheduleLimit int `json:"replica-schedule-limit"`
	MergeScheduleLimit   int `json:"merge-schedule-limit"`
	// StoreLimit: operators that add a replica to one store at once.
	StoreLimit int `json:"store-limit"`

	// PatrolRegionInterval between two checker passes over regions.
	PatrolRegionInterval Duration `json:"patrol-region-interval"`
	// OperatorTimeout cancels an operator that has not finished.
	OperatorTimeout Duration `json:"operator-timeout"`
	// HotRegionMinFlow: regions writing fewer bytes/s are not hot.
	HotRegionMinFlow uint64 `json:"hot-region-min-flow"`
	// HotRegionMinKeyRate: regions reading and writing fewer keys/s are
	// not busy. The merge checker leaves busy (and hot) regions alone: a
	// store may have split them for their load.
	HotRegionMinKeyRate uint64 `json:"hot-region-min-key-rate"`

	// Schedulers that run, by name: balance-leader, balance-region,
	// hot-region, evict-leader-<store-id>.
	Schedulers []string `json:"schedulers"`

	// LocationLabels: store label keys, from the widest (zone) to the
	// narrowest (host), that a region's replicas are spread over
	// (placement.go). Empty: placement by load alone.
	LocationLabels []string `json:"location-labels"`
}

// DefaultScheduleConfig returns PD's defaults.
func DefaultScheduleConfig() ScheduleConfig {
	return ScheduleConfig{
		MaxReplicas:          3,
		MaxStoreDownTime:     Duration{30 * time.Minute},
		StoreDisconnectTime:  Duration{20 * time.Second},
		RegionMaxSize:        144 << 20,
		RegionMaxKeys:        1_440_000,
		RegionSplitSize:      96 << 20,
		RegionSplitKeys:      960_000,
		MaxMergeRegionSize:   20 << 20,
		MaxMergeRegionKeys:   200_000,
		SplitMergeInterval:   Duration{time.Hour},
		LeaderScheduleLimit:  4,
		RegionScheduleLimit:  2048,
		ReplicaScheduleLimit: 64,
		MergeScheduleLimit:   8,
		StoreLimit:           8,
		PatrolRegionInterval: Duration{100 * time.Millisecond},
		OperatorTimeout:      Duration{10 * time.Minute},
		HotRegionMinFlow:     1 << 20,
		HotRegionMinKeyRate:  1000,
		Schedulers:           []string{"balance-leader", "balance-region", "hot-region"},
	}
}

// fill sets zero fields to the defaults.
func (c *ScheduleConfig) fill() {
	d := DefaultScheduleConfig()
	if c.MaxReplicas == 0 {
		c.MaxReplicas = d.MaxReplicas
	}
	if c.MaxStoreDownTime.Duration == 0 {
		c.MaxStoreDownTime = d.MaxStoreDownTime
	}
	if c.StoreDisconnectTime.Duration == 0 {
		c.StoreDisconnectTime = d.StoreDisconnectTime
	}
	if c.RegionMaxSize == 0 {
		c.RegionMaxSize = d.RegionMaxSize
	}
	if c.RegionMaxKeys == 0 {
		c.RegionMaxKeys = d.RegionMaxKeys
	}
	if c.RegionSplitSize == 0 {
		c.RegionSplitSize = d.RegionSplitSize
	}
	if c.RegionSplitKeys == 0 {
		c.RegionSplitKeys = d.RegionSplitKeys
	}
	if c.MaxMergeRegionSize == 0 {
		c.MaxMergeRegionSize = d.MaxMergeRegionSize
	}
	if c.MaxMergeRegionKeys == 0 {
		c.MaxMergeRegionKeys = d.MaxMergeRegionKeys
	}
	if c.SplitMergeInterval.Duration == 0 {
		c.SplitMergeInterval = d.SplitMergeInterval
	}
	if c.LeaderScheduleLimit == 0 {
		c.LeaderScheduleLimit = d.LeaderScheduleLimit
	}
	if c.RegionScheduleLimit == 0 {
		c.RegionScheduleLimit = d.RegionScheduleLimit
	}
	if c.ReplicaScheduleLimit == 0 {
		c.ReplicaScheduleLimit = d.ReplicaScheduleLimit
	}
	if c.MergeScheduleLimit == 0 {
		c.MergeScheduleLimit = d.MergeScheduleLimit
	}
	if c.StoreLimit == 0 {
		c.StoreLimit = d.StoreLimit
	}
	if c.PatrolRegionInterval.Duration == 0 {
		c.PatrolRegionInterval = d.PatrolRegionInterval
	}
	if c.OperatorTimeout.Duration == 0 {
		c.OperatorTimeout = d.OperatorTimeout
	}
	if c.HotRegionMinFlow == 0 {
		c.HotRegionMinFlow = d.HotRegionMinFlow
	}
	if c.HotRegionMinKeyRate == 0 {
		c.HotRegionMinKeyRate = d.HotRegionMinKeyRate
	}
	if c.Schedulers == nil {
		c.Schedulers = d.Schedulers
	}
}

// validate rejects a configuration that cannot work.
func (c *ScheduleConfig) validate() error {
	switch {
	case c.MaxReplicas < 1:
		return fmt.Errorf("max-replicas must be at least 1")
	case c.MaxStoreDownTime.Duration <= 0:
		return fmt.Errorf("max-store-down-time must be positive")
	case c.StoreDisconnectTime.Duration <= 0:
		return fmt.Errorf("store-disconnect-time must be positive")
	case c.RegionMaxSize == 0 || c.RegionMaxKeys == 0 || c.RegionSplitSize == 0 || c.RegionSplitKeys == 0:
		return fmt.Errorf("region-max-size, region-max-keys, region-split-size and region-split-keys must be positive")
	case c.RegionSplitSize > c.RegionMaxSize || c.RegionSplitKeys > c.RegionMaxKeys:
		return fmt.Errorf("region-split-size/keys must not exceed region-max-size/keys")
	case c.LeaderScheduleLimit < 1 || c.RegionScheduleLimit < 1 || c.ReplicaScheduleLimit < 1 || c.MergeScheduleLimit < 0 || c.StoreLimit < 1:
		return fmt.Errorf("schedule limits must be at least 1 (merge-schedule-limit 0 disables merging)")
	case c.PatrolRegionInterval.Duration <= 0 || c.OperatorTimeout.Duration <= 0 || c.SplitMergeInterval.Duration < 0:
		return fmt.Errorf("patrol-region-interval and operator-timeout must be positive")
	}
	for _, s := range c.Schedulers {
		if _, err := parseSchedulerName(s); err != nil {
			return err
		}
	}
	return nil
}
