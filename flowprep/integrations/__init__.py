"""Bridges to other training frameworks. Each module imports its framework only when it is itself imported
(`import flowprep.integrations.mmaction2` needs mmengine), so that flowprep needs none of them."""
