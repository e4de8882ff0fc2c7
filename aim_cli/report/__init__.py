"""`aim report`: one self-contained HTML page showing what each tier of a folder does to a model.

tiers (load a folder of profiles and their certificates), collect (one clean pass, the exact
curve, each tier's metrics and examples), figures (matplotlib, embedded as data URIs) and
page (the HTML, written atomically).
"""
