"""The site database schema: tables with the reference's names and columns, triggers, migrations.

Global and local rows
---------------------
The product splits its tables into ``_G`` (global: replicated to every site by DRS) and
``_L`` (local: this site only) halves behind one view. We keep one table and record the
meaning in :data:`SCOPES`: a replicated table lists its key and the columns that stay
local (the ``_L`` half). DRS copies the other columns of a replicated table; it never
copies a table marked local. *Site data* (``site_data``: the status a site reports) goes
only up to the CAS and to the package's source site, as the product's site replication
does. A replicated row fires the receiving site's triggers like a
local one, so a package created at the CAS makes ``PkgNotification`` rows at every site.

Notifications
-------------
Triggers insert ``PkgNotification`` rows (as the product's triggers do), and triggers on
``PkgNotification``, ``DistributionJobs`` and ``PullDPResponse`` append to
``TableChangeNotifications``, the queue SMSDBMON reads by ``RowID``. Every write goes
through the site's single writer, so ``RowID`` order is commit order. ``AUTOINCREMENT``
keeps RowIDs from being reused after SMSDBMON deletes the rows it has delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "DRS_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SCOPES",
    "SMSPACKAGES_COLUMNS",
    "TableScope",
]


class TableScope(NamedTuple):
    replicated: bool
    key: tuple[str, ...] = ()
    local_columns: frozenset[str] = frozenset()
    # A row's own number at each site (PkgStatus.PKID): never copied, not even on insert.
    identity: frozenset[str] = frozenset()
    # Site data: the column naming the package (its ID starts with its source site's code)
    # whose source site gets the rows, with the CAS: they travel up the tree and down only
    # toward that site, not to every sibling. '' = global data, replicated to every site.
    site_data: str = ""


SCOPES: dict[str, TableScope] = {
    "Sites": TableScope(True, ("SiteCode",)),
    "DistributionPoints": TableScope(True, ("NALPath",)),
    "PullDPMap": TableScope(True, ("PullDPServerName", "SourceDPServerName")),
    "ContentDPMap": TableScope(True, ("ContentID", "ServerName")),
    # SMSPackages_L holds where and which version this site stored, and what DistMgr must do.
    # ActionSeq counts this site's requests for its DistMgr (version 2): local too.
    "SMSPackages": TableScope(
        True,
        ("PkgID",),
        frozenset(
            {
                "StoredPkgPath",
                "StoredPkgVersion",
                "UpdateMask",
                "UpdateMaskEx",
                "Action",
                "ActionSeq",
            }
        ),
    ),
    "PackageContents": TableScope(True, ("PkgID", "ContentID")),
    # PkgServers_L: DistMgr's bookkeeping for the DP thread ("update PkgServers_L set
    # UpdateMask = 0, Action = 0, ..."): Action is local. A row inserted at another site
    # arrives with the Action it was inserted with (2: add), and a removal request (3)
    # travels with its update (see ``ops.apply_replication``). RefreshTrigger replicates:
    # a redistribute asked at the CAS for a DP of PS1 must reach PS1.
    "PkgServers": TableScope(
        True, ("PkgID", "NALPath"), frozenset({"UpdateMask", "Action", "LastRefresh"})
    ),
    # A site's status rows for its DPs and its own Type 1 row: site data ("each site's
    # PkgStatus rows ... reach the package's source site and the CAS").
    "PkgStatus": TableScope(
        True,
        ("ID", "Type", "SiteCode", "PkgServer"),
        frozenset({"PKID"}),
        frozenset({"PKID"}),
        site_data="ID",
    ),
    "PkgNotification": TableScope(False),
    "DistributionJobs": TableScope(False),
    # What crossed each DP's link for its latest install: this site's sends, this site's rows.
    "DPTransferBytes": TableScope(False),
    "PullDPResponse": TableScope(False),
    "StatusMessages": TableScope(False),
    "StatusMessageAttributes": TableScope(False),
    "TableChangeNotifications": TableScope(False),
    "SmsDbMonPosition": TableScope(False),
    # A site's Ed25519 public key, as the product's site certificates travel: by DRS.
    "SiteKeys": TableScope(True, ("SiteCode",)),
    "MiniJobs": TableScope(False),
    "PackageFileRefs": TableScope(False),
    "DrsLog": TableScope(False),
    "DrsApplying": TableScope(False),
    "DrsPosition": TableScope(False),
    "PackageIDCounters": TableScope(False),
    "SchemaVersion": TableScope(False),
}

# The columns of the provider's "insert SMSPackages (...)" statement, in the reference's order.
SMSPACKAGES_COLUMNS: tuple[str, ...] = (
    "PkgID", "Name", "Version", "Language", "Manufacturer", "Description", "ISVString",
    "Hash", "NewHash", "Source", "SourceSite", "StoredPkgPath", "RefreshSchedule",
    "LastRefresh", "StoredPkgVersion", "ShareName", "PreferredAddress", "StorePkgFlag",
    "ShareType", "HashVersion", "Architecture", "ImagePath", "Permission",
    "UseForcedDisconnect", "ForcedRetryDelay", "DisconnectDelay", "IgnoreSchedule",
    "Priority", "PkgFlags", "MIFFilename", "MIFPublisher", "MIFName", "MIFVersion",
    "SourceVersion", "SourceDate", "SourceSize", "SourceCompSize", "ImageFlags",
    "PackageType", "AlternateContentProviders", "SourceLocaleID", "TransformReadiness",
    "TransformAnalysisDate", "UpdateMask", "UpdateMaskEx", "Action", "DefaultImage",
)  # fmt: skip

_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"  # version 1's; SiteClock since version 5

# The triggers that turn admin requests into PkgNotification rows (``{now}``: TimeKey).
_PKG_NOTIFICATION_TRIGGERS = """
-- SMSPackages: a new package (created here or replicated in) -> PkgNotification Type 2
CREATE TRIGGER SMSPackages_Ins_PkgNotification AFTER INSERT ON SMSPackages
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    VALUES (NEW.PkgID, NEW.Priority, 2, {now});
END;

-- SMSPackages: an action for DistMgr (refresh, content stored, delete) -> Type 1.
-- DistMgr resetting Action to 0 notifies nobody.
CREATE TRIGGER SMSPackages_Upd_PkgNotification
AFTER UPDATE OF Action, UpdateMask, UpdateMaskEx, Source ON SMSPackages
WHEN NEW.Action <> 0
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    VALUES (NEW.PkgID, NEW.Priority, 1, {now});
END;

-- PkgServers: a DP added, or an action / redistribute requested on it -> Type 4
CREATE TRIGGER PkgServers_Ins_PkgNotification AFTER INSERT ON PkgServers
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    VALUES (NEW.PkgID,
            COALESCE((SELECT Priority FROM SMSPackages WHERE PkgID = NEW.PkgID), 2), 4, {now});
END;

CREATE TRIGGER PkgServers_Upd_PkgNotification
AFTER UPDATE OF Action, RefreshTrigger ON PkgServers
WHEN NEW.Action <> 0 OR NEW.RefreshTrigger <> 0
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    VALUES (NEW.PkgID,
            COALESCE((SELECT Priority FROM SMSPackages WHERE PkgID = NEW.PkgID), 2), 4, {now});
END;
"""

_V1 = f"""
CREATE TABLE Sites (
    SiteCode TEXT PRIMARY KEY,
    SiteName TEXT NOT NULL DEFAULT '',
    Type INTEGER NOT NULL,                 -- SiteType: 1 secondary, 2 primary, 4 CAS
    ReportToSite TEXT NOT NULL DEFAULT '', -- parent site code
    SiteServer TEXT NOT NULL
);

CREATE TABLE DistributionPoints (
    DPID INTEGER PRIMARY KEY,
    NALPath TEXT NOT NULL UNIQUE,
    ServerName TEXT NOT NULL UNIQUE COLLATE NOCASE,
    SiteCode TEXT NOT NULL,
    IsPullDP INTEGER NOT NULL DEFAULT 0,
    IsSiteServer INTEGER NOT NULL DEFAULT 0,
    MaxActiveJobs INTEGER                  -- pull DP capacity
);

CREATE TABLE PullDPMap (
    PullDPServerName TEXT NOT NULL COLLATE NOCASE,
    SourceDPServerName TEXT NOT NULL COLLATE NOCASE,
    Rank INTEGER NOT NULL,
    PRIMARY KEY (PullDPServerName, SourceDPServerName)
);

CREATE TABLE ContentDPMap (
    ContentID TEXT NOT NULL,               -- PS100039 or Content_<guid>
    Version INTEGER NOT NULL,
    ServerName TEXT NOT NULL COLLATE NOCASE,
    AccessType INTEGER NOT NULL DEFAULT 1, -- ContentAccessType
    PRIMARY KEY (ContentID, ServerName)
);

CREATE TABLE SMSPackages (
    PkgID TEXT PRIMARY KEY,
    Name TEXT NOT NULL,
    Version TEXT NOT NULL DEFAULT '',
    Language TEXT NOT NULL DEFAULT '',
    Manufacturer TEXT NOT NULL DEFAULT '',
    Description TEXT NOT NULL DEFAULT '',
    ISVString TEXT NOT NULL DEFAULT '',
    Hash TEXT NOT NULL DEFAULT '',
    NewHash TEXT NOT NULL DEFAULT '',
    Source TEXT NOT NULL DEFAULT '',
    SourceSite TEXT NOT NULL,
    StoredPkgPath TEXT NOT NULL DEFAULT '',
    RefreshSchedule TEXT NOT NULL DEFAULT '',
    LastRefresh TEXT NOT NULL DEFAULT '04/10/1970 06:35:00',
    StoredPkgVersion INTEGER NOT NULL DEFAULT 0,
    ShareName TEXT NOT NULL DEFAULT '',
    PreferredAddress TEXT NOT NULL DEFAULT '',
    StorePkgFlag INTEGER NOT NULL DEFAULT 2,
    ShareType INTEGER NOT NULL DEFAULT 1,
    HashVersion INTEGER NOT NULL DEFAULT 1,
    Architecture TEXT NOT NULL DEFAULT '',
    ImagePath TEXT NOT NULL DEFAULT '',
    Permission INTEGER NOT NULL DEFAULT 15,
    UseForcedDisconnect INTEGER NOT NULL DEFAULT 0,
    ForcedRetryDelay INTEGER NOT NULL DEFAULT 2,
    DisconnectDelay INTEGER NOT NULL DEFAULT 5,
    IgnoreSchedule INTEGER NOT NULL DEFAULT 0,
    Priority INTEGER NOT NULL DEFAULT 2,
    PkgFlags INTEGER NOT NULL DEFAULT 16777216,
    MIFFilename TEXT NOT NULL DEFAULT '',
    MIFPublisher TEXT NOT NULL DEFAULT '',
    MIFName TEXT NOT NULL DEFAULT '',
    MIFVersion TEXT NOT NULL DEFAULT '',
    SourceVersion INTEGER NOT NULL DEFAULT 1,
    SourceDate TEXT NOT NULL DEFAULT '',
    SourceSize INTEGER NOT NULL DEFAULT 0,
    SourceCompSize INTEGER NOT NULL DEFAULT 0,
    ImageFlags INTEGER NOT NULL DEFAULT 0,
    PackageType INTEGER NOT NULL DEFAULT 0,
    AlternateContentProviders TEXT NOT NULL DEFAULT '',
    SourceLocaleID INTEGER NOT NULL DEFAULT 1033,
    TransformReadiness INTEGER NOT NULL DEFAULT 0,
    TransformAnalysisDate TEXT NOT NULL DEFAULT '1980/01/01 00:00:00',
    UpdateMask INTEGER NOT NULL DEFAULT 0,
    UpdateMaskEx INTEGER NOT NULL DEFAULT 0,
    Action INTEGER NOT NULL DEFAULT 2,     -- PackageAction
    DefaultImage INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE PackageContents (            -- the content items of a package, per version
    PkgID TEXT NOT NULL,
    ContentID TEXT NOT NULL,               -- PS100039.2 or Content_<guid>.1
    PackageVersion INTEGER NOT NULL,
    RelatedContentID TEXT NOT NULL DEFAULT '',
    Hash TEXT NOT NULL DEFAULT '',
    SignatureHash TEXT NOT NULL DEFAULT '',
    Size INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (PkgID, ContentID)
);

CREATE TABLE PkgServers (
    PkgID TEXT NOT NULL,
    NALPath TEXT NOT NULL,
    SiteCode TEXT NOT NULL,
    SiteName TEXT NOT NULL DEFAULT '',
    SourceSite TEXT NOT NULL,
    LastRefresh TEXT NOT NULL DEFAULT '04/10/1970 06:35:00',
    RefreshTrigger INTEGER NOT NULL DEFAULT 0, -- 1: redistribute
    UpdateMask INTEGER NOT NULL DEFAULT 0,
    Action INTEGER NOT NULL DEFAULT 0,     -- ServerAction
    PRIMARY KEY (PkgID, NALPath)
);

CREATE TABLE PkgNotification (
    RowID INTEGER PRIMARY KEY AUTOINCREMENT,
    PkgID TEXT NOT NULL,
    Priority INTEGER NOT NULL,
    Type INTEGER NOT NULL,                 -- NotificationType
    TimeKey TEXT NOT NULL
);

CREATE TABLE DistributionJobs (
    JobID INTEGER PRIMARY KEY AUTOINCREMENT,
    DPID INTEGER NOT NULL,
    PkgID TEXT NOT NULL,
    PackageVersion INTEGER NOT NULL,
    State INTEGER NOT NULL DEFAULT 0,      -- JobState
    Action INTEGER NOT NULL,               -- JobAction
    SendAction TEXT,                       -- 'PullQueryResultAction' once a pull DP is told
    CreationTime TEXT NOT NULL,
    LastUpdateTime TEXT,
    FailureCount INTEGER NOT NULL DEFAULT 0,
    RestartTime TEXT
);
CREATE INDEX DistributionJobs_DPID ON DistributionJobs (DPID, State);

CREATE TABLE PkgStatus (
    PKID INTEGER PRIMARY KEY AUTOINCREMENT,
    ID TEXT NOT NULL,                      -- package ID
    Type INTEGER NOT NULL,                 -- PkgStatusType
    SiteCode TEXT NOT NULL,
    PkgServer TEXT NOT NULL,               -- site server name (Type 1) or DP NAL path (Type 2)
    Status INTEGER NOT NULL DEFAULT 0,     -- PkgStatusValue
    UpdateTime TEXT NOT NULL DEFAULT '',
    Location TEXT NOT NULL DEFAULT '',
    ShareName TEXT NOT NULL DEFAULT '',
    HTTPUrl TEXT NOT NULL DEFAULT '',
    SourceVersion INTEGER NOT NULL DEFAULT 0,
    Personality INTEGER NOT NULL DEFAULT 0,
    State INTEGER NOT NULL DEFAULT 0,
    SigURL TEXT NOT NULL DEFAULT '',
    SigLocation TEXT NOT NULL DEFAULT '',
    UNIQUE (ID, Type, SiteCode, PkgServer)
);

CREATE TABLE PullDPResponse (
    PkgStatusID INTEGER NOT NULL,          -- PkgStatus.PKID
    MessageTime TEXT NOT NULL,
    PkgVersion INTEGER NOT NULL,
    ActionState INTEGER NOT NULL,          -- the state message's State ID (1 = success)
    ActionData TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (PkgStatusID, MessageTime)
);

CREATE TABLE StatusMessages (
    RecordID INTEGER PRIMARY KEY AUTOINCREMENT,
    MessageID INTEGER NOT NULL,
    Severity TEXT NOT NULL,
    Component TEXT NOT NULL,
    SiteCode TEXT NOT NULL,
    MachineName TEXT NOT NULL,
    Time TEXT NOT NULL,
    InsStrings TEXT NOT NULL               -- JSON array of ISTR0..ISTR9
);
CREATE TABLE StatusMessageAttributes (
    RecordID INTEGER NOT NULL,
    AttributeID INTEGER NOT NULL,          -- 400 package ID, 404 DP NAL path, 410 version
    AttributeValue TEXT NOT NULL,
    PRIMARY KEY (RecordID, AttributeID)
);
CREATE INDEX StatusMessageAttributes_Value ON StatusMessageAttributes (AttributeID, AttributeValue);

CREATE TABLE TableChangeNotifications (   -- SMSDBMON's queue
    RowID INTEGER PRIMARY KEY AUTOINCREMENT,
    TableName TEXT NOT NULL,
    Operation TEXT NOT NULL,               -- as SMSDBMON logs it: INSERT / UPDATE
    Rule TEXT NOT NULL,                    -- PkgNotify_Add, DistributionJob_Creation, ...
    Key TEXT NOT NULL,
    Key2 TEXT NOT NULL DEFAULT '',
    Arg1 INTEGER NOT NULL DEFAULT 0,
    Arg2 INTEGER NOT NULL DEFAULT 0,
    Arg3 INTEGER NOT NULL DEFAULT 0,
    Arg4 INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE SmsDbMonPosition (
    Consumer TEXT PRIMARY KEY,
    LastRowID INTEGER NOT NULL
);

CREATE TABLE PackageIDCounters (
    SiteCode TEXT PRIMARY KEY,
    LastID INTEGER NOT NULL
);
{_PKG_NOTIFICATION_TRIGGERS.format(now=_NOW)}
-- SMSDBMON rules: "RCV: INSERT on PkgNotification for PkgNotify_Add [PkgID][RowID]"
CREATE TRIGGER PkgNotification_PkgNotify_Add AFTER INSERT ON PkgNotification
BEGIN
    INSERT INTO TableChangeNotifications (TableName, Operation, Rule, Key, Arg1, Arg2, Arg3)
    VALUES ('PkgNotification', 'INSERT', 'PkgNotify_Add', NEW.PkgID, NEW.Type, NEW.Priority,
            NEW.RowID);
END;

-- "RCV: UPDATE on DistributionJobs for DistributionJob_Creation [PkgID][RowID]": the product's
-- rule fires on a job created or put back to pending, and logs it as an UPDATE.
CREATE TRIGGER DistributionJobs_Ins_DistributionJob_Creation AFTER INSERT ON DistributionJobs
BEGIN
    INSERT INTO TableChangeNotifications (TableName, Operation, Rule, Key, Arg1, Arg2, Arg3, Arg4)
    VALUES ('DistributionJobs', 'UPDATE', 'DistributionJob_Creation', NEW.PkgID, NEW.JobID,
            NEW.DPID, NEW.PackageVersion, NEW.Action);
END;

CREATE TRIGGER DistributionJobs_Upd_DistributionJob_Creation
AFTER UPDATE OF State ON DistributionJobs
WHEN NEW.State = 0 AND OLD.State <> 0
BEGIN
    INSERT INTO TableChangeNotifications (TableName, Operation, Rule, Key, Arg1, Arg2, Arg3, Arg4)
    VALUES ('DistributionJobs', 'UPDATE', 'DistributionJob_Creation', NEW.PkgID, NEW.JobID,
            NEW.DPID, NEW.PackageVersion, NEW.Action);
END;

-- "RCV: INSERT on PullDPResponse for PullDPResponse_UpdIns [PkgStatusID][RowID]" -> .PUL
CREATE TRIGGER PullDPResponse_Ins_PullDPResponse_UpdIns AFTER INSERT ON PullDPResponse
BEGIN
    INSERT INTO TableChangeNotifications (TableName, Operation, Rule, Key, Key2, Arg1, Arg2)
    VALUES ('PullDPResponse', 'INSERT', 'PullDPResponse_UpdIns', CAST(NEW.PkgStatusID AS TEXT),
            NEW.MessageTime, NEW.PkgVersion, NEW.ActionState);
END;

CREATE TRIGGER PullDPResponse_Upd_PullDPResponse_UpdIns AFTER UPDATE ON PullDPResponse
BEGIN
    INSERT INTO TableChangeNotifications (TableName, Operation, Rule, Key, Key2, Arg1, Arg2)
    VALUES ('PullDPResponse', 'UPDATE', 'PullDPResponse_UpdIns', CAST(NEW.PkgStatusID AS TEXT),
            NEW.MessageTime, NEW.PkgVersion, NEW.ActionState);
END;
"""

# Version 2: ``SMSPackages.ActionSeq`` counts every admin request for DistMgr (each write of
# a non-zero Action, or of the refresh masks). DistMgr reads it with the package and resets
# Action only if it is unchanged when its work commits (compare and set): a refresh or a
# delete that arrives while a snapshot runs (Action 1 -> 1 included) is never overwritten,
# it is processed next.
_V2 = """
ALTER TABLE SMSPackages ADD COLUMN ActionSeq INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER SMSPackages_Upd_ActionSeq
AFTER UPDATE OF Action, UpdateMask, UpdateMaskEx, Source ON SMSPackages
WHEN NEW.Action <> 0
BEGIN
    UPDATE SMSPackages SET ActionSeq = OLD.ActionSeq + 1 WHERE PkgID = NEW.PkgID;
END;
"""

# Version 3: the bytes that crossed a DP's link for a package, full files and deltas apart.
# ``DistributionJobs.BytesFull`` / ``BytesDelta`` add up the tries of a job that failed and
# will retry (so a resumed send counts what every try moved); ``DPTransferBytes`` holds a
# DP's latest install, written in the commit that stores its Installed status, deleted when
# the package leaves the DP or the site.
_V3 = """
ALTER TABLE DistributionJobs ADD COLUMN BytesFull INTEGER NOT NULL DEFAULT 0;
ALTER TABLE DistributionJobs ADD COLUMN BytesDelta INTEGER NOT NULL DEFAULT 0;

CREATE TABLE DPTransferBytes (
    PkgID TEXT NOT NULL,
    NALPath TEXT NOT NULL,
    Version INTEGER NOT NULL,              -- the version installed
    BytesFull INTEGER NOT NULL DEFAULT 0,  -- whole files sent
    BytesDelta INTEGER NOT NULL DEFAULT 0, -- deltas sent
    PRIMARY KEY (PkgID, NALPath)
);
"""

# Version 4: ``DistributionPoints.Priority``, the DP's priority from the hierarchy file
# (the product's default 200), which PkgXferMgr logs with each send request.
_V4 = """
ALTER TABLE DistributionPoints ADD COLUMN Priority INTEGER NOT NULL DEFAULT 200;
"""

# Version 5: one clock. ``SiteClock.Now`` is the hierarchy's clock time, set by the writer
# at the start of every transaction; the PkgNotification triggers stamp TimeKey with it
# instead of SQLite's own time.
_V5 = f"""
CREATE TABLE SiteClock (Now TEXT NOT NULL);
INSERT INTO SiteClock (Now) VALUES ({_NOW});
DROP TRIGGER SMSPackages_Ins_PkgNotification;
DROP TRIGGER SMSPackages_Upd_PkgNotification;
DROP TRIGGER PkgServers_Ins_PkgNotification;
DROP TRIGGER PkgServers_Upd_PkgNotification;
{_PKG_NOTIFICATION_TRIGGERS.format(now="(SELECT Now FROM SiteClock)")}
"""

# Version 6: DRS. The tables DRS copies between sites, with their columns (the seeded ones,
# Sites, DistributionPoints and PullDPMap, are written alike at every site from
# hierarchy.toml, so they are not logged).
DRS_COLUMNS: dict[str, tuple[str, ...]] = {
    "SMSPackages": (*SMSPACKAGES_COLUMNS, "ActionSeq"),
    "PackageContents": (
        "PkgID", "ContentID", "PackageVersion", "RelatedContentID", "Hash", "SignatureHash",
        "Size",
    ),
    "PkgServers": (
        "PkgID", "NALPath", "SiteCode", "SiteName", "SourceSite", "LastRefresh",
        "RefreshTrigger", "UpdateMask", "Action",
    ),
    "PkgStatus": (
        "PKID", "ID", "Type", "SiteCode", "PkgServer", "Status", "UpdateTime", "Location",
        "ShareName", "HTTPUrl", "SourceVersion", "Personality", "State", "SigURL",
        "SigLocation",
    ),
    "ContentDPMap": ("ContentID", "Version", "ServerName", "AccessType"),
    "SiteKeys": ("SiteCode", "PublicKey"),
}  # fmt: skip


def _drs_triggers(table: str) -> str:
    """A change of the table's global data -> a ``DrsLog`` row, in commit order. Inside
    DRS's own apply (a ``DrsApplying`` row exists in that transaction) the row records
    where the change came from, so DRS forwards it to every other neighbour but that one."""
    scope = SCOPES[table]
    columns = DRS_COLUMNS[table]

    def obj(row: str, cols: Sequence[str]) -> str:
        return "json_object(" + ", ".join(f"'{c}', {row}.{c}" for c in cols) + ")"

    origin = (
        "COALESCE((SELECT Origin FROM DrsApplying), ''),"
        " COALESCE((SELECT Via FROM DrsApplying), '')"
    )
    cols = "TableName, Operation, RowJSON, Origin, Via"
    return f"""
CREATE TRIGGER Drs_{table}_Ins AFTER INSERT ON {table}
BEGIN
    INSERT INTO DrsLog ({cols}) VALUES ('{table}', 'INSERT', {obj("NEW", columns)}, {origin});
END;
{_drs_update_trigger(table)}
CREATE TRIGGER Drs_{table}_Del AFTER DELETE ON {table}
BEGIN
    INSERT INTO DrsLog ({cols}) VALUES ('{table}', 'DELETE', {obj("OLD", scope.key)}, {origin});
END;
"""


def _drs_update_trigger(table: str, *, also: str = "") -> str:
    """The table's ``Drs_<table>_Upd`` trigger: an update that changes global data is
    logged (``also``: another condition that logs it)."""
    scope = SCOPES[table]
    columns = DRS_COLUMNS[table]
    glob = [c for c in columns if c not in scope.local_columns]
    row = "json_object(" + ", ".join(f"'{c}', NEW.{c}" for c in columns) + ")"
    origin = (
        "COALESCE((SELECT Origin FROM DrsApplying), ''),"
        " COALESCE((SELECT Via FROM DrsApplying), '')"
    )
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in glob)
    if also:
        changed = f"{changed} OR ({also})"
    cols = "TableName, Operation, RowJSON, Origin, Via"
    return f"""CREATE TRIGGER Drs_{table}_Upd AFTER UPDATE ON {table} WHEN {changed}
BEGIN
    INSERT INTO DrsLog ({cols}) VALUES ('{table}', 'UPDATE', {row}, {origin});
END;"""


# ``DrsLog``: the replication log, read by this site's DRS by ``RowID`` (commit order) and
# sent to each neighbouring site; ``DrsPosition``: per neighbour, the last RowID of ours it
# acknowledged (Direction 'sent') and the last RowID of its log applied here ('received'),
# saved in the commit that applies it: exactly once across restarts of either side.
_V6 = """
CREATE TABLE DrsLog (
    RowID INTEGER PRIMARY KEY AUTOINCREMENT,
    TableName TEXT NOT NULL,
    Operation TEXT NOT NULL,               -- INSERT / UPDATE / DELETE
    RowJSON TEXT NOT NULL,                 -- the row (the key alone for a DELETE)
    Origin TEXT NOT NULL DEFAULT '',       -- the site where it changed ('' = this one)
    Via TEXT NOT NULL DEFAULT ''           -- the neighbour it came from ('' = none)
);
CREATE TABLE DrsApplying (Origin TEXT NOT NULL, Via TEXT NOT NULL);
CREATE TABLE SiteKeys (SiteCode TEXT PRIMARY KEY, PublicKey TEXT NOT NULL);

-- A mini-job: a package file (PCK) to send to a site, hop by hop (DestSite: the next hop,
-- FinalSite: where it must arrive). One per package version and final site.
CREATE TABLE MiniJobs (
    JobID INTEGER PRIMARY KEY AUTOINCREMENT,
    PkgID TEXT NOT NULL,
    Version INTEGER NOT NULL,
    BaseVersion INTEGER NOT NULL DEFAULT 0, -- a DLT from this version (0: a PCK)
    DestSite TEXT NOT NULL,
    FinalSite TEXT NOT NULL,
    TransferRoot TEXT NOT NULL,            -- the package file in SMSPKG
    Priority INTEGER NOT NULL DEFAULT 2,
    State INTEGER NOT NULL DEFAULT 0,      -- 0 pending, 1 sending, 2 complete, 3 failed
    SendRequestID TEXT NOT NULL DEFAULT '',
    Size INTEGER NOT NULL DEFAULT 0,
    Attempts INTEGER NOT NULL DEFAULT 0,
    CreationTime TEXT NOT NULL,
    UNIQUE (PkgID, Version, FinalSite)
);
-- The product's reference counted package files: deleted when the count reaches 0.
CREATE TABLE PackageFileRefs (Path TEXT PRIMARY KEY, RefCount INTEGER NOT NULL);
CREATE TABLE DrsPosition (
    Peer TEXT NOT NULL,
    Direction TEXT NOT NULL,               -- 'sent' / 'received'
    LastRowID INTEGER NOT NULL,
    PRIMARY KEY (Peer, Direction)
);
""" + "".join(_drs_triggers(t) for t in DRS_COLUMNS)


# Version 7: a removal request on a DP (PkgServers.Action 3) is logged for DRS although
# Action is PkgServers_L: a removal asked at the CAS for a DP of PS1 must reach PS1 (where
# ``ops.apply_replication`` applies the Action with it).
#
# And a site that cannot use the changes it was sent (a DLT whose base version its
# library does not hold) says so in its Type 1 status row (Status 5, Failed). Where DRS
# brings that row, the package is looked at again (a Type 1 PkgNotification for DistMgr):
# the package's source site then sends the whole package. Only a row applied by DRS
# notifies (the failing site's own DistMgr has nothing to send).
_V7 = f"""
DROP TRIGGER Drs_PkgServers_Upd;
{_drs_update_trigger("PkgServers", also="NEW.Action = 3 AND OLD.Action <> 3")}

CREATE TRIGGER PkgStatus_SiteFailed_Upd_PkgNotification
AFTER UPDATE OF Status ON PkgStatus
WHEN NEW.Type = 1 AND NEW.Status = 5 AND OLD.Status <> 5
    AND EXISTS (SELECT 1 FROM DrsApplying)
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    SELECT PkgID, Priority, 1, (SELECT Now FROM SiteClock) FROM SMSPackages
    WHERE PkgID = NEW.ID;
END;

CREATE TRIGGER PkgStatus_SiteFailed_Ins_PkgNotification
AFTER INSERT ON PkgStatus
WHEN NEW.Type = 1 AND NEW.Status = 5 AND EXISTS (SELECT 1 FROM DrsApplying)
BEGIN
    INSERT INTO PkgNotification (PkgID, Priority, Type, TimeKey)
    SELECT PkgID, Priority, 1, (SELECT Now FROM SiteClock) FROM SMSPackages
    WHERE PkgID = NEW.ID;
END;
"""

# Version 8: how far a pull DP's job has got: ``DistributionJobs.PullPercent``, the download
# percentage of the pull DP's last in-progress state message (State 2; NULL: none yet). The
# job's last one also carries the bytes that crossed, kept in ``BytesFull`` / ``BytesDelta``
# until the success message records them in ``DPTransferBytes``.
_V8 = """
ALTER TABLE DistributionJobs ADD COLUMN PullPercent INTEGER;
"""

# Version 9: an index for what is asked of a package's jobs. Without it, a package's busy
# DPs (asked by every ``wait``), its pull DPs' percentages, and whether a newer job of the
# DP and package exists (asked by every sending thread) each read every job of the site
# (or of the DP): with thousands of jobs open, each job cost time in proportion to them.
_V9 = """
CREATE INDEX DistributionJobs_PkgID ON DistributionJobs (PkgID, DPID);
"""


# (version, script). A new schema version appends a script; never edit a shipped one.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, _V1),
    (2, _V2),
    (3, _V3),
    (4, _V4),
    (5, _V5),
    (6, _V6),
    (7, _V7),
    (8, _V8),
    (9, _V9),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
