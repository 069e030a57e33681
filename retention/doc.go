// Package retention owns the retention policy of `hcpsnap prune` and
// `hcpsnap backup --prune`: which backups of one cluster stay and which go,
// and the rule that decided each. It is pure: it reads no bucket and no
// clock (the caller passes now), so every safety rule is a unit test.
//
// The rules are restic's: --keep-last N keeps the N newest backups;
// --keep-hourly/daily/weekly/monthly N keep the newest backup of each of the
// N most recent hours, days, ISO weeks or months that have a backup (periods
// in UTC); --keep-within D keeps every backup younger than D measured from
// the newest backup, not from now, so that a cluster whose backups stopped
// does not lose them one by one as time passes. A backup kept by any rule
// stays, and a decision lists every rule that kept it.
//
// Beside the policy, the safety rules hold whatever the policy says: an
// empty policy is refused; the newest verified backup is kept; a folder
// without a usable backup (manifest missing or unreadable, snapshot missing
// or not the manifest's) is kept and reported unless the caller includes
// incomplete folders, and even then when it is younger than the guard,
// because a backup run in progress looks exactly like that; a folder that an
// interrupted prune already began to remove is finished.
//
// Layer: plain data. It imports nothing of hcpsnap.
package retention
