"""The marketplace: listings, offers, deals with escrow on the credit ledger, reputation, disputes."""
