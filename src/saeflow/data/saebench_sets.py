"""SAEBench's probing datasets as data: the class list of each of its integer-labelled datasets
(sae_bench_utils/dataset_info.py, `chosen_classes_per_dataset`, SAEBench v0.6.0) and the column each is balanced by
(`dataset_metadata` `column2_name`). A task named after one of them takes its class list
(saeflow.evals.saebench). SAEBench's string- or float-labelled datasets (codeparrot/github-code languages,
Helsinki-NLP/europarl languages, amazon review sentiment 1.0 / 5.0) are not here: saeflow reads integer labels."""

CLASS_SETS = {
    "LabHC/bias_in_bios_class_set1": [0, 1, 2, 6, 9],
    "LabHC/bias_in_bios_class_set2": [11, 13, 14, 18, 19],
    "LabHC/bias_in_bios_class_set3": [20, 21, 22, 25, 26],
    "canrager/amazon_reviews_mcauley_1and5": [1, 2, 3, 5, 6],
    "fancyzhx/ag_news": [0, 1, 2, 3],
}
BALANCE_COLUMNS = {"LabHC/bias_in_bios": "gender", "canrager/amazon_reviews_mcauley_1and5": "rating"}
