"""How a call is executed: validation (:mod:`.inputs`), the op registry (:mod:`.ops`), the
thresholds per platform (:mod:`.policy`), the choice of engine (:mod:`.engine`), and the
engines themselves: lean NumPy (:mod:`.eager`), matrix-free tiles (:mod:`.reductions`,
:mod:`.symmetric`), devices (:mod:`.sharding`), with padding, memory checks and the
compilation cache beside them."""
