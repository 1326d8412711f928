package postgres

// The maintenance statements, for the tests that check their plans and
// run them inside a test's transaction.
const (
	StaleWorkersSQL         = staleWorkersSQL
	DeleteOfflineWorkersSQL = deleteOfflineWorkersSQL
	DeleteFinishedSQL       = deleteFinishedSQL
	NextLeaseExpirySQL      = nextLeaseExpirySQL
	ExpiredLeasesSQL        = expiredLeasesSQL
	NextScheduleFireSQL     = nextScheduleFireSQL
)
