"""IP-set manager: Felix's IP sets into the classification entries the policy stages match on."""

from __future__ import annotations

from felix_p4.compile.ipsets import Classifier
from felix_p4.compile.policy import SET_BITS
from felix_p4.model.state import Changes, DataplaneState
from felix_p4.p4.sync import SyncEngine
from felix_p4.pipeline import Owner


class IpSetManager:
    """Owns the classifier: which referenced sets hold which members, and their bits.

    Programs reference sets through the classifier (the policy manager); an IP-set update
    reclassifies only the members of referenced sets that changed.
    """

    name = Owner.IPSETS

    def __init__(self, sync: SyncEngine) -> None:
        self.sync = sync
        self.classifier = Classifier(SET_BITS)

    def update(self, state: DataplaneState, changes: Changes) -> None:
        if changes.ipsets:
            self.classifier.sets_changed(changes.ipsets, state.ipsets.get, changes.ipset_deltas)

    def flush(self) -> None:
        """Hand the recomputed classification entries to the sync engine."""
        classifier = self.classifier
        for owner in classifier.changed:
            self.sync.set_owner(owner, classifier.entries_for(owner))
        classifier.changed.clear()
