package postgres

// The step statements, for the test that checks their plans.
const (
	HistorySQL  = historySQL
	NewStepsSQL = newStepsSQL
)
