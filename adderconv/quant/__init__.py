"""int8 adder inference (see adderconv.quant.api)."""
