-- Why a pending or paused deployment waits, as data: a JSON `Hold` ({"kind": ...}),
-- NULL when nothing holds it. Until now the state lived in the wording of `reason`;
-- that wording is parsed here, once, and `reason` is for people from now on.
ALTER TABLE deployments ADD COLUMN hold TEXT;

-- "queued behind d-7" (the name is `d-<id>`, so it needs no quoting in JSON).
UPDATE deployments SET hold = json_object('kind', 'queued', 'behind', trim(substr(reason, 14)))
    WHERE status = 'pending' AND substr(reason, 1, 14) = 'queued behind ';
-- "waiting for promote: ...", "... to switch: ...", "... to retire blue: ...".
UPDATE deployments SET hold = json_object('kind', 'promote')
    WHERE status = 'paused' AND substr(reason, 1, 19) = 'waiting for promote';
-- "interrupted at step N of M: Parley stopped; ..." (written at restart).
UPDATE deployments SET hold = json_object('kind', 'interrupted')
    WHERE status = 'paused' AND substr(reason, 1, 15) = 'interrupted at ';
-- "gate inconclusive at step N of M: ...".
UPDATE deployments SET hold = json_object('kind', 'inconclusive')
    WHERE status = 'paused' AND substr(reason, 1, 18) = 'gate inconclusive ';
-- "held before installing step N of M: 2 already unavailable (...)" (max-unavailable).
UPDATE deployments SET hold = json_object('kind', 'unavailable')
    WHERE status = 'paused' AND substr(reason, 1, 22) = 'held before installing';
-- Any other pause ("paused by alice at step 1 of 2") is an operator's.
UPDATE deployments SET hold = json_object('kind', 'paused')
    WHERE status = 'paused' AND hold IS NULL;
